"""The Cronofy sandbox's memoized event rendering gives what rendering afresh gives.

Read Events and Free Busy answer pre-encoded JSON fragments memoized per cache entry;
these tests read, change the world (natively, through the API, by deleting, by moving
the clock), read again, and compare every page with the un-memoized renderer's JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import attrs
import httpx
import pytest
from calbridge_cronofy.sandbox import _query as query
from calbridge_cronofy.sandbox import engine_for
from calbridge_cronofy.sandbox._query import Query, encoded_renderer, renderer, run_query
from calbridge_cronofy.sandbox._wire import encode_json
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse

from calbridge import Attendee, EventTime, Transparency
from calbridge.sandbox import World

from .conftest import bearer, connect

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, tzinfo=UTC)  # the manual clock's start
EMAIL = "alice@example.com"


def at(hours: float) -> EventTime:
    return EventTime.zoned(T0 + dt.timedelta(hours=hours), "UTC")


async def served(
    http: httpx.AsyncClient, token: dict[str, Any], params: dict[str, str], key: str = "events"
) -> list[tuple[bytes, dict[str, Any]]]:
    """Every page of a read: (raw body, parsed body)."""
    url = "/cronofy/v1/free_busy" if key == "free_busy" else "/cronofy/v1/events"
    r = await http.get(url, params=params, headers=bearer(token))
    out = []
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        out.append((r.content, r.json()))
        next_page = r.json()["pages"].get("next_page")
        if not next_page:
            return out
        r = await http.get(next_page, headers=bearer(token))


async def check(
    http: httpx.AsyncClient,
    world: World,
    token: dict[str, Any],
    key: str = "events",
    **params: str,
) -> list[dict[str, Any]]:
    """Read through HTTP; each page is byte for byte JSONResponse of the fresh rendering."""
    params = {"tzid": "Etc/UTC", **params}
    engine = engine_for(world)
    grant = engine.authenticate(token["access_token"])
    assert grant is not None
    q = Query.parse(QueryParams(params))
    free_busy = key == "free_busy"
    pages = await served(http, token, params, key)
    fresh = renderer(engine, grant, q, free_busy=free_busy)
    expected = [fresh(row) for row in run_query(engine, grant, q, free_busy=free_busy)]
    size = engine.settings.page_size
    for n, (raw, body) in enumerate(pages):
        chunk = expected[n * size : (n + 1) * size]
        assert raw == JSONResponse({"pages": body["pages"], key: chunk}).body
    assert sum(len(body[key]) for _, body in pages) == len(expected)
    return expected


def rows_match_fresh_rendering(world: World, token: dict[str, Any], **params: str) -> None:
    """Rows of a read, rendered memoized (twice) and afresh, now."""
    engine = engine_for(world)
    grant = engine.authenticate(token["access_token"])
    assert grant is not None
    q = Query.parse(QueryParams({"tzid": "Etc/UTC", **params}))
    rows = run_query(engine, grant, q, free_busy=False)
    fresh = renderer(engine, grant, q, free_busy=False)
    memo = encoded_renderer(engine, grant, q, free_busy=False)
    for row in rows:
        assert memo(row) == memo(row) == encode_json(fresh(row))


@pytest.fixture
def small_pages(world: World) -> None:
    settings = engine_for(world).settings
    settings.page_size = 3
    settings.rate_limits = ()  # many reads
    settings.access_token_ttl = 100 * 86400  # and months pass


@pytest.mark.usefixtures("small_pages")
async def test_reads_follow_native_api_and_clock_changes(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    r = await http.get("/cronofy/v1/calendars", headers=bearer(token))
    cid = r.json()["calendars"][0]["calendar_id"]
    cal = world.primary_calendar(EMAIL).id
    people = (Attendee(email="bob@example.com", name="Bob"), Attendee(email=EMAIL))
    single = world.insert_event(cal, start=at(2), end=at(3), summary="One", attendees=people)
    world.insert_event(
        cal,
        start=EventTime.all_day(dt.date(2026, 1, 7)),
        end=EventTime.all_day(dt.date(2026, 1, 8)),
        summary="Holiday",
        transparency=Transparency.TRANSPARENT,
    )
    paris = dt.datetime(2026, 1, 6, 8, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    world.insert_event(
        cal,
        start=EventTime.zoned(paris, "Europe/Paris"),
        end=EventTime.zoned(paris + dt.timedelta(hours=1), "Europe/Paris"),
        summary="Café ☕",
        location="Rue 1",
    )
    master = world.insert_event(
        cal, start=at(24), end=at(25), summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=4"]
    )
    world.insert_event(
        cal,
        start=at(50),
        end=at(51),
        summary="Moved standup",
        recurring_event_id=master.id,
        original_start=at(48),
        ical_uid=master.ical_uid,
    )
    await world.clock.advance(3)
    variants: list[dict[str, str]] = [
        {},
        {"localized_times": "true", "tzid": "Europe/Paris"},
        {"google_event_ids": "true", "include_managed": "true"},
        {"include_managed": "true", "include_deleted": "true", "localized_times": "true"},
    ]
    for params in variants:
        await check(http, world, token, **params)
    await check(http, world, token, "free_busy", localized_times="true")
    before = await check(http, world, token)
    assert [e["summary"] for e in before][:2] == ["One", "Café ☕"]

    # a native change behind the app's back
    world.update_event(cal, single.id, summary="One, renamed", location="Room 9")
    world.update_event(cal, master.id, summary="Daily")
    await world.clock.advance(3)
    after = await check(http, world, token)
    renamed = next(e for e in after if e["event_uid"] == before[0]["event_uid"])
    assert (renamed["summary"], renamed["location"]) == ("One, renamed", {"description": "Room 9"})
    assert renamed["updated"] != before[0]["updated"]
    assert {e["summary"] for e in after if e["recurring"]} == {"Daily", "Moved standup"}

    # a managed event through the API, then its update
    url = f"/cronofy/v1/calendars/{cid}/events"
    body = {"event_id": "mine", "summary": "v1", "start": at(5).datetime, "end": at(6).datetime}
    body = json.loads(json.dumps(body, default=lambda d: d.isoformat()))
    assert (await http.post(url, json=body, headers=bearer(token))).status_code == 202
    await world.clock.advance(5)
    for params in variants:
        await check(http, world, token, **params)
    managed = await check(http, world, token, include_managed="true")
    assert [e["summary"] for e in managed if e.get("event_id") == "mine"] == ["v1"]
    assert (await http.post(url, json={**body, "summary": "v2"}, headers=bearer(token))).is_success
    await world.clock.advance(5)
    managed = await check(http, world, token, include_managed="true")
    assert [e["summary"] for e in managed if e.get("event_id") == "mine"] == ["v2"]

    # deletions: natively and through the API
    world.delete_event(cal, single.id)
    r = await http.request("DELETE", url, json={"event_id": "mine"}, headers=bearer(token))
    assert r.status_code == 202
    await world.clock.advance(5)
    for params in variants:
        await check(http, world, token, **params)
    gone = await check(http, world, token, include_managed="true", include_deleted="true")
    assert {e["summary"]: e["deleted"] for e in gone if e["deleted"]} == {
        "One, renamed": True,
        "v2": True,
    }
    assert "One, renamed" not in [e["summary"] for e in await check(http, world, token)]

    # time passes: the window moves, tomorrow's occurrences leave it
    await world.clock.advance(43 * 86400)
    for params in variants:
        await check(http, world, token, **params)
    await check(http, world, token, "free_busy")


async def test_rows_read_before_a_change_render_what_fresh_rendering_gives(
    http: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paging snapshot keeps its rows; their JSON follows the cache entry's state now."""
    monkeypatch.setattr(query, "_MEMO_CAP", 2)  # series instances overflow the memo
    token = await connect(http)
    cal = world.primary_calendar(EMAIL).id
    single = world.insert_event(cal, start=at(2), end=at(3), summary="One")
    world.insert_event(
        cal, start=at(24), end=at(25), summary="Series", recurrence=["RRULE:FREQ=DAILY;COUNT=5"]
    )
    await world.clock.advance(3)
    engine = engine_for(world)
    grant = engine.authenticate(token["access_token"])
    assert grant is not None
    q = Query.parse(QueryParams({"tzid": "Etc/UTC"}))
    old_rows = run_query(engine, grant, q, free_busy=False)
    fresh = renderer(engine, grant, q, free_busy=False)
    memo = encoded_renderer(engine, grant, q, free_busy=False)
    old_json = [memo(row) for row in old_rows]
    assert old_json == [encode_json(fresh(row)) for row in old_rows]
    rows_match_fresh_rendering(world, token)

    world.update_event(cal, single.id, summary="Renamed")
    await world.clock.advance(3)
    for _ in range(2):  # old and new rows of one entry, alternately
        assert [memo(row) for row in old_rows] == [encode_json(fresh(row)) for row in old_rows]
        rows_match_fresh_rendering(world, token)
    world.delete_event(cal, single.id)
    await world.clock.advance(3)
    # the old rows keep the old occurrence, but show the entry's deletion and last_modified
    stale = [memo(row) for row in old_rows]
    assert stale == [encode_json(fresh(row)) for row in old_rows]
    assert stale != old_json
    assert json.loads(stale[0])["deleted"] is True
    assert json.loads(stale[0])["summary"] == "One"
    rows_match_fresh_rendering(world, token, include_deleted="true")
    for row in old_rows:
        assert len(row[1].rendered) <= 2


async def test_every_part_of_a_row_reaches_its_json(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    cal = world.primary_calendar(EMAIL).id
    world.insert_event(cal, start=at(2), end=at(3), summary="One")
    await world.clock.advance(3)
    engine = engine_for(world)
    grant = engine.authenticate(token["access_token"])
    assert grant is not None
    q = Query.parse(QueryParams({"tzid": "Etc/UTC", "google_event_ids": "true"}))
    [(occ, cached, cal_, uid, event_id)] = run_query(engine, grant, q, free_busy=False)
    fresh = renderer(engine, grant, q, free_busy=False)
    memo = encoded_renderer(engine, grant, q, free_busy=False)
    moved = attrs.evolve(occ, start=at(4), end=at(5))
    instance = attrs.evolve(occ, original_start=at(2), instance_id="x_1")
    other_cal = attrs.evolve(cal_, calendar_id="cal_other")
    base = (occ, cached, cal_, uid, event_id)
    seen = set()
    for _ in range(2):
        for row in [
            base,
            (occ, cached, cal_, uid, "managed-id"),
            (occ, cached, cal_, "evt_other", event_id),
            (occ, cached, other_cal, uid, event_id),
            (moved, cached, cal_, uid, event_id),
            (instance, cached, cal_, uid, event_id),
            (attrs.evolve(occ, instance_id="y"), cached, cal_, uid, event_id),
            (instance, cached, attrs.evolve(cal_, native_id="n2"), uid, event_id),
        ]:
            assert memo(row) == encode_json(fresh(row))
            seen.add(memo(row))
        # the cache entry changes in place (a sync would also replace its native event)
        cached.deleted = not cached.deleted
        assert memo(base) == encode_json(fresh(base))
        cached.last_modified += dt.timedelta(seconds=1)
        assert memo(base) == encode_json(fresh(base))
    assert len(seen) == 16
