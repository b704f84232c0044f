"""One world: what the Google sandbox changes, Cronofy's sandbox sees for the same user."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from calbridge_cronofy.sandbox import create_app as cronofy_app
from calbridge_google.sandbox import create_app as google_app
from calbridge_google.testing import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, sandbox_rig

from calbridge import ChannelRequest, EventDraft, EventTime

REDIRECT = "https://app.example.test/oauth/cronofy"


async def _cronofy_token(http: httpx.AsyncClient, email: str) -> str:
    r = await http.get(
        "http://sandbox.test/cronofy/oauth/authorize",
        params={"response_type": "code", "client_id": SANDBOX_CLIENT_ID, "redirect_uri": REDIRECT,
                "scope": "read_events create_event delete_event", "state": "s",
                "login_hint": email},
    )  # fmt: skip
    assert r.status_code == 302, r.text
    code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    r = await http.post(
        "http://sandbox.test/cronofy/oauth/token",
        json={"client_id": SANDBOX_CLIENT_ID, "client_secret": SANDBOX_CLIENT_SECRET,
              "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def _cronofy_events(http: httpx.AsyncClient, token: str) -> list[dict[str, Any]]:
    r = await http.get(
        "http://sandbox.test/cronofy/v1/events",
        params={"tzid": "Etc/UTC", "from": "2026-01-01", "to": "2026-02-01",
                "google_event_ids": "true", "include_deleted": "true"},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


async def test_a_google_write_shows_in_cronofy_after_its_sync_delay() -> None:
    """Same native calendar: same iCalUID, and google_event_ids reads carry the Google id."""
    sandboxes = {"google": google_app, "cronofy": cronofy_app}
    async with sandbox_rig(sandboxes=sandboxes) as rig:
        http = rig.provider.http
        token = await _cronofy_token(http, rig.email)
        await rig.world.clock.advance(1)
        assert await _cronofy_events(http, token) == []
        start = rig.now() + dt.timedelta(days=2)
        draft = EventDraft(
            summary="made at Google",
            start=EventTime.zoned(start, "Europe/Paris"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "Europe/Paris"),
        )
        made = await rig.provider.create_event(
            rig.session, rig.calendar_id, draft, idempotency_key="one-world-1"
        )
        assert made.ical_uid
        await rig.world.clock.advance(0.5)
        assert await _cronofy_events(http, token) == [], "Cronofy saw it before its sync delay"
        await rig.world.clock.advance(300)
        (seen,) = await _cronofy_events(http, token)
        assert seen["summary"] == "made at Google"
        assert seen["ical_uid"] == made.ical_uid
        assert seen["google_event_id"] == made.id
        await rig.provider.delete_event(rig.session, rig.calendar_id, made.id)
        await rig.world.clock.advance(300)
        (gone,) = await _cronofy_events(http, token)
        assert gone["deleted"] is True
        assert gone["google_event_id"] == made.id


async def test_a_cronofy_write_reaches_google_sync_and_push() -> None:
    """The other way: a Cronofy-managed event lands natively and Google's delta and watch see it."""
    sandboxes = {"google": google_app, "cronofy": cronofy_app}
    async with sandbox_rig(sandboxes=sandboxes) as rig:
        http = rig.provider.http
        token = await _cronofy_token(http, rig.email)
        auth = {"Authorization": f"Bearer {token}"}
        cals = (await http.get("http://sandbox.test/cronofy/v1/calendars", headers=auth)).json()
        cronofy_cal = next(c["calendar_id"] for c in cals["calendars"] if c["calendar_primary"])
        full = [p async for p in rig.provider.changes(rig.session, rig.calendar_id, None)]
        channel = await rig.provider.subscribe(
            rig.session, ChannelRequest(callback_url=rig.callback_url)
        )
        r = await http.post(
            f"http://sandbox.test/cronofy/v1/calendars/{cronofy_cal}/events",
            json={"event_id": "crm-42", "summary": "booked via Cronofy", "tzid": "Etc/UTC",
                  "start": "2026-01-07T15:00:00Z", "end": "2026-01-07T16:00:00Z"},
            headers=auth,
        )  # fmt: skip
        assert r.status_code == 202, r.text
        await rig.world.clock.advance(5)
        delta = [
            c
            async for p in rig.provider.changes(rig.session, rig.calendar_id, full[-1].cursor)
            for c in p.changes
        ]
        assert [c.event.summary for c in delta if c.event] == ["booked via Cronofy"]
        states = [r.headers["x-goog-resource-state"] for r in rig.hooks.for_channel(channel.id)]
        assert states == ["sync", "exists"]
