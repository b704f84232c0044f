"""An upsert equal to the stored event leaves the native calendar alone.

Cronofy calls the underlying calendar only when a change is required: no new native
version, no native change, and so no notification to anyone.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from calbridge import Attendee, Person
from calbridge.sandbox import NativeChange, World

from .conftest import REDIRECT, Receiver, bearer, connect
from .test_cronofy_app import at, calendar_id, make_channel, notifications, read

OTHER, OTHER_SECRET = "other", "other-secret"


async def connect_other_app(http: httpx.AsyncClient, world: World) -> dict[str, Any]:
    """A second application authorized on alice's account (it is notified of app one's writes)."""
    world.add_application(OTHER, OTHER_SECRET)
    r = await http.get(
        "/cronofy/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": OTHER,
            "redirect_uri": REDIRECT,
            "login_hint": "alice@example.com",
        },
    )
    code = r.headers["location"].split("code=")[1].split("&")[0]
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": OTHER,
            "client_secret": OTHER_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    assert r.status_code == 200, r.text
    token: dict[str, Any] = r.json()
    return token


def kinds(receiver: Receiver) -> list[str]:
    return [n["notification"]["type"] for n in notifications(receiver)]


BODY: dict[str, Any] = {
    "event_id": "team-sync",
    "summary": "Team sync",
    "description": "Weekly",
    "start": {"time": "2026-01-08T09:00:00", "tzid": "Europe/Paris"},
    "end": {"time": "2026-01-08T10:00:00", "tzid": "Europe/Paris"},
    "location": {"description": "Room 1"},
    "transparency": "opaque",
    "event_private": False,
    "attendees": {"invite": [{"email": "bob@example.com", "display_name": "Bob"}]},
    "recurrence": {"rules": [{"frequency": "weekly", "count": 3}]},
}


async def test_identical_managed_upsert_does_not_write_the_native_event(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    other = await connect_other_app(http, world)
    await make_channel(http, other)
    cid = await calendar_id(http, token)
    url = f"/cronofy/v1/calendars/{cid}/events"
    assert (await http.post(url, json=BODY, headers=bearer(token))).status_code == 202
    await world.clock.advance(5)
    assert kinds(receiver) == ["verification", "change"]  # app two learns of the creation
    native_cal = world.primary_calendar("alice@example.com").id
    [created] = world.events(native_cal)
    before = await read(http, token, include_managed="true")
    changes: list[NativeChange] = []
    world.subscribe(changes.append)

    for _ in range(2):  # the same upsert, again and again
        r = await http.post(url, json=json.loads(json.dumps(BODY)), headers=bearer(token))
        assert (r.status_code, r.content) == (202, b"")
        await world.clock.advance(5)
    assert changes == []
    assert world.events(native_cal) == [created]  # same version, same etag
    assert kinds(receiver) == ["verification", "change"]
    assert await read(http, token, include_managed="true") == before

    # a real change is still written, once, and notified
    await http.post(url, json={**BODY, "summary": "Team sync (moved)"}, headers=bearer(token))
    await world.clock.advance(5)
    [changed] = world.events(native_cal)
    assert (changed.summary, changed.version) == ("Team sync (moved)", created.version + 1)
    assert [c.event.version for c in changes] == [changed.version]
    assert kinds(receiver) == ["verification", "change", "change"]


async def test_identical_external_upsert_and_participation_do_not_write(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    other = await connect_other_app(http, world)
    cid = await calendar_id(http, token)
    native_cal = world.primary_calendar("alice@example.com").id
    native = world.insert_event(
        native_cal,
        start=at(24),
        end=at(25),
        summary="Their meeting",
        organizer=Person(email="boss@example.com"),
        attendees=[Attendee(email="alice@example.com")],
    )
    await world.clock.advance(3)
    await make_channel(http, other)
    await world.clock.advance(0)
    [event] = await read(http, token)
    changes: list[NativeChange] = []
    world.subscribe(changes.append)

    same = {
        "event_uid": event["event_uid"],
        "summary": "Their meeting",
        "start": at(24).as_utc().isoformat(),
        "end": at(25).as_utc().isoformat(),
        "tzid": "UTC",  # the stored times' zone (the default, Etc/UTC, would be a change)
    }
    url = f"/cronofy/v1/calendars/{cid}/events"
    assert (await http.post(url, json=same, headers=bearer(token))).status_code == 202
    await world.clock.advance(5)
    assert changes == []
    assert world.event(native_cal, native.id) == native

    status_url = f"{url}/{event['event_uid']}/participation_status"
    r = await http.post(status_url, json={"status": "accepted"}, headers=bearer(token))
    assert r.status_code == 202
    await world.clock.advance(5)
    assert [c.event.version for c in changes] == [native.version + 1]
    accepted = world.event(native_cal, native.id)
    r = await http.post(status_url, json={"status": "accepted"}, headers=bearer(token))
    assert r.status_code == 202
    await world.clock.advance(5)
    assert world.event(native_cal, native.id) == accepted  # already accepted: no write
    assert len(changes) == 1
    assert kinds(receiver) == ["verification", "change"]  # the acceptance only
