"""google-api-python-client (its bundled calendar v3 discovery document) against the Google
sandbox over real loopback HTTP: the sandbox speaks what Google's own client expects.

``api_endpoint`` replaces the discovery document's ``rootUrl + servicePath``
(``https://www.googleapis.com/calendar/v3/``), so it points at ``.../google/calendar/v3/``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest
from calbridge_google.sandbox import create_app, google_sandbox
from calbridge_google.testing import HookCapture
from google.oauth2.credentials import Credentials
from googleapiclient import channel as gchannel
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread

EMAIL = "bob@example.com"


@attrs.define
class Rig:
    world: World
    server: LoopbackServer
    hooks: HookCapture
    service: Any

    def run_due(self) -> None:
        self.server.call(self.world.clock.run_due)


@pytest.fixture
def rig() -> Iterator[Rig]:
    hooks = HookCapture()
    world = World(transport=httpx.MockTransport(hooks))
    tokens = google_sandbox(world).issue_tokens(EMAIL)
    with serve_in_thread(build_app(world, {"google": create_app})) as server:
        service = build(
            "calendar",
            "v3",
            credentials=Credentials(tokens["access_token"]),  # type: ignore[no-untyped-call]
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": f"{server.base_url}/google/calendar/v3/"},
        )
        yield Rig(world=world, server=server, hooks=hooks, service=service)
        service.close()


def _event(n: int, **extra: Any) -> dict[str, Any]:
    start = dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    return {
        "summary": f"event {n}",
        "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Paris"},
        "end": {"dateTime": (start + dt.timedelta(minutes=30)).isoformat()},
        **extra,
    }


def _reason(err: HttpError) -> str:
    details = err.error_details
    assert isinstance(details, list)
    return str(details[0]["reason"])


def _all(service: Any, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    events = service.events()
    request = events.list(calendarId="primary", **params)
    items: list[dict[str, Any]] = []
    pages = 0
    last: dict[str, Any] = {}
    while request is not None:
        last = request.execute()
        pages += 1
        items.extend(last.get("items", []))
        if "nextPageToken" in last:
            assert "nextSyncToken" not in last
        request = events.list_next(request, last)
    return items, last, pages


def test_calendar_list(rig: Rig) -> None:
    """calendarList.list returns the user's primary calendar, with paging."""
    rig.world.add_calendar(EMAIL, "Team")
    first = rig.service.calendarList().list(maxResults=1).execute()
    assert first["kind"] == "calendar#calendarList"
    assert first["items"][0]["id"] == EMAIL
    assert first["items"][0]["primary"] is True
    assert "nextPageToken" in first
    second = rig.service.calendarList().list(pageToken=first["nextPageToken"]).execute()
    assert [c["summary"] for c in second["items"]] == ["Team"]


def test_insert_get_patch_delete(rig: Rig) -> None:
    """CRUD with a client-supplied id, 409 on a repeated id, 412 on a stale etag, 410 twice."""
    events = rig.service.events()
    created = events.insert(calendarId="primary", body=_event(1, id="abcdef12345")).execute()
    assert created["id"] == "abcdef12345"
    assert created["start"]["timeZone"] == "Europe/Paris"
    with pytest.raises(HttpError) as dup:
        events.insert(calendarId="primary", body=_event(1, id="abcdef12345")).execute()
    assert dup.value.resp.status == 409
    assert _reason(dup.value) == "duplicate"
    got = events.get(calendarId="primary", eventId="abcdef12345").execute()
    assert got["etag"] == created["etag"]
    patched = events.patch(
        calendarId="primary", eventId="abcdef12345", body={"summary": "renamed"}
    ).execute()
    assert patched["summary"] == "renamed"
    assert patched["etag"] != created["etag"]
    stale = events.patch(calendarId="primary", eventId="abcdef12345", body={"summary": "x"})
    stale.headers["If-Match"] = created["etag"]
    with pytest.raises(HttpError) as conflict:
        stale.execute()
    assert conflict.value.resp.status == 412
    events.delete(calendarId="primary", eventId="abcdef12345").execute()
    with pytest.raises(HttpError) as gone:
        events.delete(calendarId="primary", eventId="abcdef12345").execute()
    assert gone.value.resp.status == 410
    assert _reason(gone.value) == "deleted"
    assert events.get(calendarId="primary", eventId="abcdef12345").execute()["status"] == (
        "cancelled"
    )


def test_list_paging_and_sync_tokens(rig: Rig) -> None:
    """Paging with list_next, nextSyncToken on the last page, deltas with tombstones, 410."""
    events = rig.service.events()
    ids = [events.insert(calendarId="primary", body=_event(n)).execute()["id"] for n in range(5)]
    items, last, pages = _all(rig.service, maxResults=2)
    assert pages == 3
    assert sorted(i["id"] for i in items) == sorted(ids)
    token = last["nextSyncToken"]
    events.patch(calendarId="primary", eventId=ids[0], body={"summary": "moved"}).execute()
    events.delete(calendarId="primary", eventId=ids[1]).execute()
    delta, last2, _ = _all(rig.service, syncToken=token, maxResults=1)
    assert {i["id"]: i["status"] for i in delta} == {ids[0]: "confirmed", ids[1]: "cancelled"}
    tomb = next(i for i in delta if i["id"] == ids[1])
    assert set(tomb) <= {"kind", "etag", "id", "status"}
    with pytest.raises(HttpError) as bad:
        events.list(calendarId="primary", syncToken=last2["nextSyncToken"],
                    timeMin="2026-01-01T00:00:00Z").execute()  # fmt: skip
    assert bad.value.resp.status == 400
    google_sandbox(rig.world).expire_sync_tokens()
    with pytest.raises(HttpError) as expired:
        events.list(calendarId="primary", syncToken=last2["nextSyncToken"]).execute()
    assert expired.value.resp.status == 410
    assert _reason(expired.value) == "fullSyncRequired"


def test_window_and_instances(rig: Rig) -> None:
    """timeMin bounds ends and timeMax starts; a series expands and instances() lists it."""
    events = rig.service.events()
    master = events.insert(
        calendarId="primary",
        body=_event(0, recurrence=["RRULE:FREQ=DAILY;COUNT=4"], summary="daily"),
    ).execute()
    with pytest.raises(HttpError) as no_tz:
        events.insert(
            calendarId="primary",
            body={"start": {"dateTime": "2026-01-06T09:00:00Z"},
                  "end": {"dateTime": "2026-01-06T10:00:00Z"},
                  "recurrence": ["RRULE:FREQ=DAILY"]},
        ).execute()  # fmt: skip
    assert no_tz.value.resp.status == 400
    listed = events.list(calendarId="primary", singleEvents=True, orderBy="startTime",
                         timeMin="2026-01-07T09:00:00Z",  # exclusive on the end: day 2 ends 09:30
                         timeMax="2026-01-08T09:00:00Z").execute()  # fmt: skip
    assert [i["start"]["dateTime"] for i in listed["items"]] == ["2026-01-07T10:00:00+01:00"]
    inst = events.instances(calendarId="primary", eventId=master["id"]).execute()
    assert len(inst["items"]) == 4
    assert {i["recurringEventId"] for i in inst["items"]} == {master["id"]}
    events.delete(calendarId="primary", eventId=inst["items"][1]["id"]).execute()
    masters = events.list(calendarId="primary").execute()["items"]
    cancelled = [i for i in masters if i["status"] == "cancelled"]
    assert len(cancelled) == 1
    assert set(cancelled[0]) >= {"id", "recurringEventId", "originalStartTime"}
    with pytest.raises(HttpError) as empty:
        events.list(calendarId="primary", timeMin="2026-01-08T00:00:00Z",
                    timeMax="2026-01-07T00:00:00Z").execute()  # fmt: skip
    assert _reason(empty.value) == "timeRangeEmpty"


def test_watch_notifications_and_stop(rig: Rig) -> None:
    """events.watch: sync first, then exists with growing numbers; channels.stop ends it."""
    ch = gchannel.new_webhook_channel("https://app.example.test/hook", token="tok-1")
    body = ch.body()
    watched = rig.service.events().watch(calendarId="primary", body=body).execute()
    ch.update(watched)
    assert watched["resourceId"]
    assert int(watched["expiration"]) > 0
    rig.run_due()
    rig.service.events().insert(calendarId="primary", body=_event(2)).execute()
    rig.run_due()
    delivered = rig.hooks.for_channel(ch.id)
    states = [r.headers["x-goog-resource-state"] for r in delivered]
    numbers = [int(r.headers["x-goog-message-number"]) for r in delivered]
    assert states == ["sync", "exists"]
    assert numbers == sorted(numbers)
    assert all(r.content == b"" for r in delivered)
    assert all(r.headers["x-goog-channel-token"] == "tok-1" for r in delivered)
    note = gchannel.notification_from_headers(ch, dict(delivered[-1].headers))
    assert note.state == "exists"
    assert note.resource_id == watched["resourceId"]
    rig.service.channels().stop(body=ch.body()).execute()
    rig.service.events().insert(calendarId="primary", body=_event(3)).execute()
    rig.run_due()
    assert len(rig.hooks.for_channel(ch.id)) == 2


def test_freebusy(rig: Rig) -> None:
    """freebusy.query merges busy blocks and reports unknown calendars."""
    events = rig.service.events()
    events.insert(calendarId="primary", body=_event(1)).execute()
    events.insert(calendarId="primary", body=_event(1, summary="overlap")).execute()
    events.insert(calendarId="primary", body=_event(3, transparency="transparent")).execute()
    answer = rig.service.freebusy().query(
        body={"timeMin": "2026-01-06T00:00:00Z", "timeMax": "2026-01-07T00:00:00Z",
              "items": [{"id": "primary"}, {"id": "nobody@example.com"}]}
    ).execute()  # fmt: skip
    assert answer["calendars"]["primary"]["busy"] == [
        {"start": "2026-01-06T10:00:00Z", "end": "2026-01-06T10:30:00Z"}
    ]
    assert answer["calendars"]["nobody@example.com"]["errors"][0]["reason"] == "notFound"


def test_injected_rate_limits(rig: Rig) -> None:
    """Injected 403 rate limits and 429 carry Google's usageLimits reasons."""
    google_sandbox(rig.world).fail_next(403, reason="userRateLimitExceeded")
    with pytest.raises(HttpError) as limited:
        rig.service.calendarList().list().execute()
    assert limited.value.resp.status == 403
    assert _reason(limited.value) == "userRateLimitExceeded"
    rig.world.faults.fail_next("google", 429)
    with pytest.raises(HttpError) as throttled:
        rig.service.calendarList().list().execute()
    assert throttled.value.resp.status == 429
    assert rig.service.calendarList().list().execute()["items"]
