"""The Graph sandbox's wire behaviour, driven with raw HTTP (in-process)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from calbridge_outlook.testing import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    OutlookSandboxRig,
    sandbox_rig,
)

from calbridge import EventTime
from calbridge.sandbox import World

UTC_PREFER = 'outlook.timezone="UTC", IdType="ImmutableId"'


@pytest.fixture
async def rig() -> AsyncIterator[OutlookSandboxRig]:
    async with sandbox_rig() as r:
        yield r


async def _headers(rig: OutlookSandboxRig, prefer: str = UTC_PREFER) -> dict[str, str]:
    tokens = await rig.session.access_token()
    return {"Authorization": f"Bearer {tokens.access_token.reveal()}", "Prefer": prefer}


def _event_body(start: str, end: str, tz: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {
        "subject": "Sync",
        "start": {"dateTime": start, "timeZone": tz},
        "end": {"dateTime": end, "timeZone": tz},
        **extra,
    }


async def test_oauth_rotates_refresh_tokens_and_checks_pkce(rig: OutlookSandboxRig) -> None:
    tokens = await rig.session.access_token()
    fresh = await rig.provider.refresh_tokens(tokens)
    assert fresh.refresh_token is not None
    assert fresh.refresh_token != tokens.refresh_token
    from calbridge.errors import ReauthRequired

    with pytest.raises(ReauthRequired):  # the old refresh token is single-use
        await rig.provider.refresh_tokens(tokens)
    base = rig.base_url
    consent = await rig.http.get(
        f"{base}/common/oauth2/v2.0/authorize",
        params={
            "client_id": SANDBOX_CLIENT_ID,
            "redirect_uri": "https://app.example.test/cb",
            "response_type": "code",
            "scope": "Calendars.ReadWrite offline_access",
            "state": "s1",
            "login_hint": "bob@contoso.example",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
    )
    assert consent.status_code == 302
    query = parse_qs(urlsplit(consent.headers["location"]).query)
    assert query["state"] == ["s1"]
    assert rig.world.user("bob@contoso.example").native == "microsoft"
    assert rig.world.primary_calendar("bob@contoso.example").primary
    refused = await rig.http.post(
        f"{base}/common/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": "https://app.example.test/cb",
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "code_verifier": "wrong-verifier",
        },
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert refused.json()["error_description"].startswith("AADSTS")


async def test_prefer_time_zone_and_the_all_day_exception(rig: OutlookSandboxRig) -> None:
    url = f"{rig.base_url}/v1.0/me/events"
    created = await rig.http.post(
        url,
        headers=await _headers(rig),
        json=_event_body("2026-01-06T17:00:00", "2026-01-06T18:00:00", "Pacific Standard Time"),
    )
    assert created.status_code == 201
    body = created.json()
    assert body["start"] == {"dateTime": "2026-01-07T01:00:00.0000000", "timeZone": "UTC"}
    assert body["originalStartTimeZone"] == "Pacific Standard Time"
    assert body["@odata.etag"] == f'W/"{body["changeKey"]}"'
    day = await rig.http.post(
        url,
        headers=await _headers(rig),
        json=_event_body(
            "2026-01-08T00:00:00", "2026-01-09T00:00:00", "Pacific Standard Time", isAllDay=True
        ),
    )
    assert day.status_code == 201
    tokyo = await _headers(rig, 'outlook.timezone="Tokyo Standard Time"')
    view = await rig.http.get(
        f"{rig.base_url}/v1.0/me/calendarView",
        params={"startDateTime": "2026-01-05T00:00:00", "endDateTime": "2026-01-12T00:00:00"},
        headers=tokyo,
    )
    items = {i["subject"] + str(i["isAllDay"]): i for i in view.json()["value"]}
    timed, allday = items["SyncFalse"], items["SyncTrue"]
    assert timed["start"] == {
        "dateTime": "2026-01-07T10:00:00.0000000",
        "timeZone": "Tokyo Standard Time",
    }
    # all-day events stay midnight to midnight, never shifted by the Prefer zone
    assert allday["start"]["dateTime"] == "2026-01-08T00:00:00.0000000"
    assert allday["end"]["dateTime"] == "2026-01-09T00:00:00.0000000"
    assert allday["start"]["timeZone"] == "Tokyo Standard Time"


async def test_change_key_transaction_id_and_if_match(rig: OutlookSandboxRig) -> None:
    url = f"{rig.base_url}/v1.0/me/calendars/{rig.calendar_id}/events"
    body = _event_body("2026-01-06T09:00:00", "2026-01-06T10:00:00", transactionId="txn-1")
    first = (await rig.http.post(url, headers=await _headers(rig), json=body)).json()
    again = (await rig.http.post(url, headers=await _headers(rig), json=body)).json()
    assert first["id"] == again["id"]
    assert len(rig.world.events(rig.calendar_id)) == 1
    event_url = f"{rig.base_url}/v1.0/me/events/{first['id']}"
    patched = await rig.http.patch(
        event_url,
        headers={**await _headers(rig), "If-Match": first["@odata.etag"]},
        json={"subject": "Moved"},
    )
    assert patched.status_code == 200
    assert patched.json()["changeKey"] != first["changeKey"]
    stale = await rig.http.patch(
        event_url,
        headers={**await _headers(rig), "If-Match": first["@odata.etag"]},
        json={"subject": "Lost update"},
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
    assert (await rig.http.delete(event_url, headers=await _headers(rig))).status_code == 204
    gone = await rig.http.delete(event_url, headers=await _headers(rig))
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "ErrorItemNotFound"
    assert set(gone.json()["error"]["innerError"]) >= {"request-id", "date"}


async def test_series_expand_into_occurrences_and_exceptions(rig: OutlookSandboxRig) -> None:
    body = _event_body(
        "2026-01-05T09:00:00",
        "2026-01-05T09:30:00",
        "W. Europe Standard Time",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]},
            "range": {"type": "numbered", "numberOfOccurrences": 6, "startDate": "2026-01-05"},
        },
    )
    master = await rig.http.post(
        f"{rig.base_url}/v1.0/me/events", headers=await _headers(rig), json=body
    )
    assert master.status_code == 201
    m = master.json()
    assert m["type"] == "seriesMaster"
    assert m["recurrence"]["pattern"]["daysOfWeek"] == ["monday", "wednesday"]
    assert m["recurrence"]["range"]["recurrenceTimeZone"] == "W. Europe Standard Time"
    window = {"startDateTime": "2026-01-01T00:00:00Z", "endDateTime": "2026-02-01T00:00:00Z"}
    view_url = f"{rig.base_url}/v1.0/me/calendarView"
    items = (await rig.http.get(view_url, params=window, headers=await _headers(rig))).json()[
        "value"
    ]
    assert [i["type"] for i in items] == ["occurrence"] * 6
    assert {i["seriesMasterId"] for i in items} == {m["id"]}
    assert items[0]["start"]["dateTime"] == "2026-01-05T08:00:00.0000000"  # 09:00 CET in UTC
    assert items[1]["originalStart"] == "2026-01-07T08:00:00.0000000Z"
    second, third = items[1], items[2]
    edited = await rig.http.patch(
        f"{rig.base_url}/v1.0/me/events/{second['id']}",
        headers=await _headers(rig),
        json={"subject": "Moved one"},
    )
    assert edited.json()["type"] == "exception"
    assert edited.json()["id"] == second["id"]
    assert (
        await rig.http.delete(
            f"{rig.base_url}/v1.0/me/events/{third['id']}", headers=await _headers(rig)
        )
    ).status_code == 204
    items = (await rig.http.get(view_url, params=window, headers=await _headers(rig))).json()[
        "value"
    ]
    assert [i["type"] for i in items] == [
        "occurrence",
        "exception",
        "occurrence",
        "occurrence",
        "occurrence",
    ]
    assert items[1]["subject"] == "Moved one"
    assert third["id"] not in {i["id"] for i in items}
    instances = await rig.http.get(
        f"{rig.base_url}/v1.0/me/events/{m['id']}/instances",
        params=window,
        headers=await _headers(rig),
    )
    assert len(instances.json()["value"]) == 5
    missing = await rig.http.get(view_url, headers=await _headers(rig))
    assert missing.status_code == 400


async def test_delta_rounds_removed_noise_and_expiry(rig: OutlookSandboxRig) -> None:
    cal, now = rig.calendar_id, rig.now()

    def add(hours: float, summary: str) -> str:
        start = now + dt.timedelta(hours=hours)
        return rig.world.insert_event(
            cal,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
            summary=summary,
        ).id

    ids = [add(24 + i, f"e{i}") for i in range(5)]
    outside = add(24 * 90, "far away")
    url = f"{rig.base_url}/v1.0/me/calendarView/delta"
    params = {
        "startDateTime": now.isoformat(),
        "endDateTime": (now + dt.timedelta(days=30)).isoformat(),
    }
    headers = {**await _headers(rig), "Prefer": UTC_PREFER + ", odata.maxpagesize=2"}
    page = (await rig.http.get(url, params=params, headers=headers)).json()
    seen: list[str] = []
    while "@odata.nextLink" in page:
        assert "$skiptoken=" in page["@odata.nextLink"]
        seen += [i["id"] for i in page["value"]]
        page = (await rig.http.get(page["@odata.nextLink"], headers=headers)).json()
    seen += [i["id"] for i in page["value"]]
    assert sorted(seen) == sorted(ids)
    delta_link = page["@odata.deltaLink"]
    assert "$deltatoken=" in delta_link
    rig.world.update_event(cal, ids[0], summary="changed")
    rig.world.delete_event(cal, ids[1])
    rig.world.update_event(cal, outside, summary="still far")
    page = (await rig.http.get(delta_link, headers=headers)).json()
    items = list(page["value"])
    while "@odata.nextLink" in page:
        page = (await rig.http.get(page["@odata.nextLink"], headers=headers)).json()
        items += page["value"]
    by_id = {i["id"]: i for i in items}
    assert by_id[ids[0]]["subject"] == "changed"
    assert by_id[ids[1]]["@removed"] == {"reason": "deleted"}
    assert by_id[outside]["@removed"] == {"reason": "deleted"}  # Graph's out-of-window noise
    assert set(by_id) == {ids[0], ids[1], outside}
    next_link = page["@odata.deltaLink"]
    await rig.world.clock.advance(8 * 24 * 3600)  # older than delta_token_ttl
    await rig.session.refresh(await rig.session.access_token())  # the access token expired too
    headers = {**await _headers(rig), "Prefer": UTC_PREFER}
    expired = await rig.http.get(next_link, headers=headers)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "syncStateNotFound"
    assert "$deltatoken=" in expired.headers["location"]
    reset = await rig.http.get(expired.headers["location"], headers=headers)
    assert reset.status_code == 200  # the reset link starts a fresh round over the window
    assert {i["id"] for i in reset.json()["value"]} == {ids[0], *ids[2:]}


async def test_subscriptions_validate_expire_renew_and_notify(rig: OutlookSandboxRig) -> None:
    url = f"{rig.base_url}/v1.0/subscriptions"
    expiry = (rig.now() + dt.timedelta(minutes=180)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": rig.callback_url,
        "lifecycleNotificationUrl": rig.callback_url,
        "resource": f"/me/calendars/{rig.calendar_id}/events",
        "expirationDateTime": expiry,
        "clientState": "s3cret",
    }
    too_long = dict(body, expirationDateTime=(rig.now() + dt.timedelta(minutes=10_081)).isoformat())
    refused = await rig.http.post(url, headers=await _headers(rig), json=too_long)
    assert refused.status_code == 400
    assert "10080 minutes" in refused.json()["error"]["message"]
    rig.hooks.echo = False
    silent = await rig.http.post(url, headers=await _headers(rig), json=body)
    assert silent.status_code == 400
    assert "validation request failed" in silent.json()["error"]["message"]
    rig.hooks.echo = True
    created = await rig.http.post(url, headers=await _headers(rig), json=body)
    assert created.status_code == 201
    sub = created.json()
    assert rig.hooks.validations[-1].startswith("Validation: ")
    start = rig.now() + dt.timedelta(days=1)
    event = rig.world.insert_event(
        rig.calendar_id,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )
    await rig.settle()
    items = rig.hooks.items(sub["id"])
    assert items[-1]["changeType"] == "created"
    assert items[-1]["clientState"] == "s3cret"
    assert items[-1]["resourceData"]["id"] == event.id
    renewed_to = (rig.now() + dt.timedelta(minutes=240)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    renewed = await rig.http.patch(
        f"{url}/{sub['id']}", headers=await _headers(rig), json={"expirationDateTime": renewed_to}
    )
    assert renewed.status_code == 200
    await rig.world.clock.advance(181 * 60)  # the first expiry passes; the renewal holds
    lifecycle = [i for i in rig.hooks.items(sub["id"]) if "lifecycleEvent" in i]
    assert [i["lifecycleEvent"] for i in lifecycle] == ["reauthorizationRequired"]
    assert lifecycle[0]["clientState"] == "s3cret"
    await rig.session.refresh(await rig.session.access_token())
    assert (
        await rig.http.get(f"{url}/{sub['id']}", headers=await _headers(rig))
    ).status_code == 200
    await rig.world.clock.advance(60 * 60)
    await rig.session.refresh(await rig.session.access_token())
    assert (
        await rig.http.get(f"{url}/{sub['id']}", headers=await _headers(rig))
    ).status_code == 404
    before = len(rig.hooks.items(sub["id"]))
    rig.world.update_event(rig.calendar_id, event.id, summary="after expiry")
    await rig.settle()
    assert len(rig.hooks.items(sub["id"])) == before  # expired subscriptions stay silent


async def test_mailbox_concurrency_throttles_with_fractional_retry_after() -> None:
    async with sandbox_rig() as rig:
        rig.world.faults.set_latency("graph", 0.2)
        headers = await _headers(rig)
        url = f"{rig.base_url}/v1.0/me/calendars"
        import asyncio

        answers = await asyncio.gather(*(rig.http.get(url, headers=headers) for _ in range(7)))
        throttled = [a for a in answers if a.status_code == 429]
        assert len([a for a in answers if a.status_code == 200]) == 4
        assert len(throttled) == 3
        assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
        assert float(throttled[0].headers["retry-after"]) == pytest.approx(0.35)


async def test_get_schedule_reports_busy_blocks(rig: OutlookSandboxRig) -> None:
    start = dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC)
    rig.world.insert_event(
        rig.calendar_id,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )
    answer = await rig.http.post(
        f"{rig.base_url}/v1.0/me/calendar/getSchedule",
        headers=await _headers(rig),
        json={
            "schedules": [rig.email, "nobody@contoso.example"],
            "startTime": {"dateTime": "2026-01-06T08:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": "2026-01-06T11:00:00", "timeZone": "UTC"},
            "availabilityViewInterval": 60,
        },
    )
    mine, nobody = answer.json()["value"]
    assert mine["availabilityView"] == "020"
    assert mine["scheduleItems"][0]["status"] == "busy"
    assert nobody["error"]["responseCode"] == "ErrorMailRecipientNotFound"


async def test_served_by_the_composite_app_under_graph() -> None:
    from calbridge.sandbox import build_app, installed_sandboxes

    assert "graph" in installed_sandboxes()
    world = World()
    app = build_app(world)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sb"
    ) as http:
        index = (await http.get("/_sandbox/")).json()
        assert index["providers"]["graph"] == "http://sb/graph"
        denied = await http.get("/graph/v1.0/me/calendars")
        assert denied.status_code == 401
        assert json.loads(denied.content)["error"]["code"] == "InvalidAuthenticationToken"
