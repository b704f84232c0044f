"""One world: the Cronofy sandbox's view of a Microsoft-native user follows what the
Graph sandbox changes, and Graph sees what Cronofy writes (same native calendar)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from calbridge_cronofy.sandbox import create_app as cronofy_app
from calbridge_outlook.sandbox import create_app as graph_app
from calbridge_outlook.testing import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, sandbox_rig

from calbridge import EventDraft, EventTime, TimeRange

REDIRECT = "https://app.example.test/oauth/cronofy"


async def _cronofy_token(http: httpx.AsyncClient, email: str) -> str:
    r = await http.get(
        "http://sandbox.test/cronofy/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": SANDBOX_CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "read_events create_event delete_event",
            "state": "s",
            "login_hint": email,
        },
    )
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    r = await http.post(
        "http://sandbox.test/cronofy/oauth/token",
        json={
            "client_id": SANDBOX_CLIENT_ID,
            "client_secret": SANDBOX_CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def _cronofy_events(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await http.get(
        "http://sandbox.test/cronofy/v1/events",
        params={
            "tzid": "Etc/UTC",
            "from": "2026-01-01",
            "to": "2026-02-01",
            "include_deleted": "true",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def test_graph_writes_reach_cronofys_view_of_the_same_mailbox() -> None:
    sandboxes = {"graph": graph_app, "cronofy": cronofy_app}
    async with sandbox_rig(sandboxes=sandboxes) as rig:
        http = rig.provider.http
        token = await _cronofy_token(http, rig.email)
        profiles = await http.get(
            "http://sandbox.test/cronofy/v1/profiles", headers={"Authorization": f"Bearer {token}"}
        )
        assert profiles.json()["profiles"][0]["provider_name"] == "exchange"
        await rig.world.clock.advance(1)
        assert await _cronofy_events(http, token) == []
        start = dt.datetime(2026, 1, 8, 15, tzinfo=dt.UTC)
        made = await rig.provider.create_event(
            rig.session,
            rig.calendar_id,
            EventDraft(
                summary="made at Graph",
                start=EventTime.zoned(start, "America/New_York"),
                end=EventTime.zoned(start + dt.timedelta(hours=1), "America/New_York"),
            ),
            idempotency_key="one-world-graph",
        )
        await rig.world.clock.advance(300)
        (seen,) = await _cronofy_events(http, token)
        assert seen["summary"] == "made at Graph"
        assert seen["ical_uid"] == made.ical_uid
        await rig.provider.delete_event(rig.session, rig.calendar_id, made.id)
        await rig.world.clock.advance(300)
        (gone,) = await _cronofy_events(http, token)
        assert gone["deleted"] is True
        # and the other way: what Cronofy writes lands in the mailbox Graph serves
        cal_id = (
            await http.get(
                "http://sandbox.test/cronofy/v1/calendars",
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()["calendars"][0]["calendar_id"]
        wrote = await http.post(
            f"http://sandbox.test/cronofy/v1/calendars/{cal_id}/events",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "event_id": "from-cronofy",
                "summary": "made at Cronofy",
                "start": "2026-01-09T10:00:00Z",
                "end": "2026-01-09T11:00:00Z",
                "tzid": "Etc/UTC",
            },
        )
        assert wrote.status_code == 202, wrote.text
        await rig.world.clock.advance(60)
        window = TimeRange(
            start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
        )
        events = [
            e
            async for page in rig.provider.list_events(rig.session, rig.calendar_id, window)
            for e in page
        ]
        assert [e.summary for e in events] == ["made at Cronofy"]
