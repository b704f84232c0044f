"""calendarView/delta edge cases Graph produces that the sandbox does not on its own:
links followed verbatim, replays, items carrying only changed properties, Location resets."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from calbridge_outlook import OutlookProvider

from calbridge import (
    Account,
    ChangeKind,
    ChangePage,
    ProviderSettings,
    Session,
    StaticTokenSource,
    TimeRange,
    TokenSet,
)
from calbridge.errors import SyncCursorExpired

BASE = "https://graph.test"
WINDOW = TimeRange(
    start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
)


def _event(event_id: str, day: int, subject: str = "x") -> dict[str, Any]:
    return {
        "id": event_id,
        "subject": subject,
        "changeKey": f"ck-{event_id}-{subject}",
        "type": "singleInstance",
        "isAllDay": False,
        "originalStartTimeZone": "W. Europe Standard Time",
        "start": {"dateTime": f"2026-01-{day:02d}T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": f"2026-01-{day:02d}T09:00:00.0000000", "timeZone": "UTC"},
    }


def _removed(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "@removed": {"reason": "deleted"}}


class FakeGraph:
    """Serves scripted delta pages keyed by the exact URL asked for."""

    def __init__(self) -> None:
        self.pages: dict[str, httpx.Response] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.asked.append(url)
        if "/v1.0/me/events/" in url:
            event_id = request.url.path.rsplit("/", 1)[1]
            if event_id in self.events:
                return httpx.Response(200, json=self.events[event_id])
            return httpx.Response(
                404, json={"error": {"code": "ErrorItemNotFound", "message": "x"}}
            )
        if url in self.pages:
            return self.pages[url]
        for prefix, response in self.pages.items():
            if prefix.endswith("?start") and url.startswith(prefix):
                return response
        return httpx.Response(500, json={"error": {"code": "unexpected", "message": url}})


def _provider(fake: FakeGraph) -> tuple[OutlookProvider, Session]:
    provider = OutlookProvider(
        http=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        settings=ProviderSettings(client_id="c", base_urls={"graph": BASE, "login": BASE}),
    )
    session = Session(
        account=Account(app_user_id="u", provider="outlook", provider_account_id="mbx"),
        tokens=StaticTokenSource(TokenSet(access_token="t")),
    )
    return provider, session


async def _collect(
    provider: OutlookProvider, session: Session, cursor: str | None
) -> list[ChangePage]:
    return [p async for p in provider.changes(session, "cal", cursor, window=WINDOW)]


async def test_links_are_followed_verbatim_and_replays_tolerated() -> None:
    fake = FakeGraph()
    start = f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?start"
    skip = f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?$skiptoken=A%2BB&x=1"
    delta1 = f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?$deltatoken=D1"
    fake.pages[start] = httpx.Response(
        200,
        json={
            "value": [_event("e1", 5), _event("e1", 5), _event("e2", 6)],
            "@odata.nextLink": skip,
        },
    )
    fake.pages[skip] = httpx.Response(
        200, json={"value": [_event("e3", 7), _removed("never-seen")], "@odata.deltaLink": delta1}
    )
    pages = await _collect(*_provider(fake), None)
    assert fake.asked[1] == skip, "the nextLink must be requested exactly as given"
    assert [p.cursor is not None for p in pages] == [False, True]
    assert [c.event_id for c in pages[0].changes] == ["e1", "e2"]  # the replay collapsed
    assert [c.event_id for c in pages[1].changes] == ["e3"]  # noise for an unknown id dropped
    cursor = pages[-1].cursor
    assert cursor is not None
    # next round: a partial item (only changed props), a replayed deletion, a move out
    fake.asked.clear()
    fake.events["e2"] = _event("e2", 6, "renamed")
    delta2 = f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?$deltatoken=D2"
    moved = _event("e3", 7)
    moved["start"]["dateTime"] = "2026-03-01T08:00:00.0000000"
    moved["end"]["dateTime"] = "2026-03-01T09:00:00.0000000"
    fake.pages[delta1] = httpx.Response(
        200,
        json={
            "value": [
                {"id": "e2", "subject": "renamed"},
                _removed("e1"),
                _removed("e1"),
                moved,
            ],
            "@odata.deltaLink": delta2,
        },
    )
    provider, session = _provider(fake)
    (page,) = await _collect(provider, session, cursor)
    assert fake.asked[0] == delta1
    got = {(c.event_id, c.kind) for c in page.changes}
    assert got == {
        ("e2", ChangeKind.UPSERTED),
        ("e1", ChangeKind.DELETED),
        ("e3", ChangeKind.DELETED),
    }
    renamed = next(c for c in page.changes if c.event_id == "e2")
    assert renamed.event is not None
    assert renamed.event.summary == "renamed"
    assert renamed.event.start.tzid == "Europe/Berlin"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(410, json={"error": {"code": "SyncStateNotFound", "message": "gen=149"}}),
        httpx.Response(410, json={"error": {"code": "resyncRequired", "message": "reset"}}),
        httpx.Response(
            410, headers={"Location": f"{BASE}/v1.0/me/calendarView/delta?$deltatoken="}
        ),
    ],
)
async def test_every_410_expires_the_cursor(response: httpx.Response) -> None:
    fake = FakeGraph()
    delta1 = f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?$deltatoken=D1"
    fake.pages[f"{BASE}/v1.0/me/calendars/cal/calendarView/delta?start"] = httpx.Response(
        200, json={"value": [], "@odata.deltaLink": delta1}
    )
    provider, session = _provider(fake)
    (first,) = await _collect(provider, session, None)
    fake.pages[delta1] = response
    with pytest.raises(SyncCursorExpired):
        await _collect(provider, session, first.cursor)
