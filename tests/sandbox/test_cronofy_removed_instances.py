"""Occurrences of a series that go away, as the Cronofy sandbox reports them.

Cronofy shows a series as its instances (``recurring: true``, ``series_identifier``,
one ``event_uid`` per instance). When an instance is cancelled natively, or its whole
series is deleted, Read Events with ``include_deleted=true`` reports each instance that
went as ``"deleted": true`` with the uid, calendar and times it had while shown; without
``include_deleted`` it is simply absent. Every such change is pushed to channels.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from calbridge import EventStatus, EventTime
from calbridge.sandbox import NativeEvent, World

from .conftest import Receiver, bearer, connect
from .test_cronofy_app import calendar_id, make_channel, notifications, read
from .test_cronofy_render_cache import check

T0 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)  # the manual clock's start
EMAIL = "alice@example.com"
SERIES_FIELDS = ("event_uid", "calendar_id", "recurring", "series_identifier", "ical_uid")


def at(hours: float) -> EventTime:
    return EventTime.zoned(T0 + dt.timedelta(hours=hours), "UTC")


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def daily_standup(world: World, count: int = 4) -> NativeEvent:
    """A daily series from tomorrow 09:00 UTC, natively in alice's calendar."""
    return world.insert_event(
        world.primary_calendar(EMAIL).id,
        start=at(24),
        end=at(24.5),
        summary="Standup",
        recurrence=[f"RRULE:FREQ=DAILY;COUNT={count}"],
    )


def exception(
    world: World,
    master: NativeEvent,
    original: float,
    moved_to: float | None = None,
    status: EventStatus = EventStatus.CONFIRMED,
) -> NativeEvent:
    """A native exception of ``master`` for its occurrence at ``at(original)``."""
    start = original if moved_to is None else moved_to
    return world.insert_event(
        master.calendar_id,
        start=at(start),
        end=at(start + 0.5),
        summary="Standup",
        recurring_event_id=master.id,
        original_start=at(original),
        ical_uid=master.ical_uid,
        status=status,
    )


def changes(receiver: Receiver) -> list[str]:
    """``changes_since`` of every change notification received so far."""
    return [
        n["notification"]["changes_since"]
        for n in notifications(receiver)
        if n["notification"]["type"] == "change"
    ]


def same_instance(deleted: dict[str, Any], live: dict[str, Any]) -> None:
    """``deleted`` is ``live`` as a removed event."""
    for name in (*SERIES_FIELDS, "start", "end", "summary"):
        assert deleted[name] == live[name], name
    assert deleted["recurring"] is True
    assert (deleted["deleted"], deleted["status"]) == (True, "cancelled")
    assert (live["deleted"], live["status"]) == (False, "confirmed")


async def test_a_natively_cancelled_occurrence_is_reported_deleted(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    master = daily_standup(world)
    await world.clock.advance(3)
    await make_channel(http, token)
    live = await read(http, token)
    assert [e["start"] for e in live] == [
        "2026-01-06T09:00:00Z",
        "2026-01-07T09:00:00Z",
        "2026-01-08T09:00:00Z",
        "2026-01-09T09:00:00Z",
    ]
    assert len({e["series_identifier"] for e in live}) == 1
    before = iso(world.clock.now())

    # the user cancels the second occurrence in Google (a cancelled exception)
    exception(world, master, 48, status=EventStatus.CANCELLED)
    await world.clock.advance(5)
    [since] = changes(receiver)  # the cancellation is pushed
    assert [e["event_uid"] for e in await read(http, token)] == [
        live[0]["event_uid"],
        live[2]["event_uid"],
        live[3]["event_uid"],
    ]
    everything = await read(http, token, include_deleted="true")
    assert [e["deleted"] for e in everything] == [False, True, False, False]
    same_instance(everything[1], live[1])
    for last_modified in (since, before):
        [gone] = await read(http, token, include_deleted="true", last_modified=last_modified)
        same_instance(gone, live[1])
        assert gone["updated"] == since
    assert await read(http, token, last_modified=since) == []  # absent without include_deleted
    later = iso(world.clock.now() + dt.timedelta(seconds=1))
    assert await read(http, token, include_deleted="true", last_modified=later) == []
    assert "Standup" not in [
        e["summary"] for e in await read(http, token, include_deleted="true", to="2026-01-06")
    ]  # outside the asked window
    await check(http, world, token, include_deleted="true")  # memoized JSON = fresh JSON


async def test_cancelling_an_existing_exception_reports_the_instance_as_last_shown(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    master = daily_standup(world, count=3)
    moved = exception(world, master, 48, moved_to=50)
    await world.clock.advance(3)
    await make_channel(http, token)
    live = await read(http, token)
    assert [e["start"] for e in live][1] == "2026-01-07T11:00:00Z"

    # Google's way of deleting one occurrence: the exception is cancelled
    world.update_event(master.calendar_id, moved.id, status=EventStatus.CANCELLED)
    await world.clock.advance(5)
    [since] = changes(receiver)
    assert len(await read(http, token)) == 2
    [gone] = await read(http, token, include_deleted="true", last_modified=since)
    same_instance(gone, live[1])  # its uid, and the (moved) times it was shown with
    await check(http, world, token, include_deleted="true")


async def test_a_deleted_series_reports_each_instance_in_the_window_deleted(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    master = daily_standup(world, count=5)
    exception(world, master, 48, moved_to=51)  # moved
    exception(world, master, 72, status=EventStatus.CANCELLED)  # cancelled already
    await world.clock.advance(3)
    await make_channel(http, token)
    live = await read(http, token)
    assert len(live) == 4
    cancelled_earlier = await read(http, token, include_deleted="true")
    assert [e["deleted"] for e in cancelled_earlier] == [False, False, True, False, False]
    before = iso(world.clock.now())

    world.delete_event(master.calendar_id, master.id)  # tombstones its exceptions too
    await world.clock.advance(5)
    [since] = changes(receiver)
    assert await read(http, token) == []
    gone = await read(http, token, include_deleted="true")
    assert [e["event_uid"] for e in gone] == [e["event_uid"] for e in cancelled_earlier]
    assert all(e["deleted"] for e in gone)
    for old, new in zip(cancelled_earlier, gone, strict=True):
        for name in (*SERIES_FIELDS, "start", "end"):
            assert new[name] == old[name], name
    for last_modified in (before, since):
        got = await read(http, token, include_deleted="true", last_modified=last_modified)
        assert [e["event_uid"] for e in got] == [e["event_uid"] for e in gone]
        assert {e["updated"] for e in got} == {since}
    # no row for the series itself, whose uid was never shown
    assert master.id not in {e["series_identifier"] for e in gone}
    assert {e["series_identifier"] for e in gone} == {live[0]["series_identifier"]}
    assert all(e["event_uid"] != e["series_identifier"] for e in gone)
    # only the instances inside the asked window
    window = {"from": "2026-01-07", "to": "2026-01-09"}
    inside = await read(http, token, include_deleted="true", **window)
    assert [e["start"] for e in inside] == [
        "2026-01-07T12:00:00Z",  # the moved one, where it was shown
        "2026-01-08T09:00:00Z",
    ]
    await check(http, world, token, include_deleted="true")


async def test_deleting_an_exception_brings_the_occurrence_back_to_the_series(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    """The world's semantics (``expand``): a deleted exception no longer overrides its
    occurrence, which the series shows again at its original time with its uid; readers
    since the deletion see it, and it is not reported deleted."""
    token = await connect(http)
    master = daily_standup(world, count=3)
    moved = exception(world, master, 48, moved_to=50)
    cancelled = exception(world, master, 72, status=EventStatus.CANCELLED)
    await world.clock.advance(3)
    await make_channel(http, token)
    live = await read(http, token)
    assert [e["start"] for e in live] == ["2026-01-06T09:00:00Z", "2026-01-07T11:00:00Z"]

    world.delete_event(master.calendar_id, moved.id)
    world.delete_event(master.calendar_id, cancelled.id)
    await world.clock.advance(5)
    [since] = changes(receiver)
    back = await read(http, token, include_deleted="true", last_modified=since)
    assert [(e["start"], e["deleted"]) for e in back] == [
        ("2026-01-07T09:00:00Z", False),
        ("2026-01-08T09:00:00Z", False),
    ]
    assert back[0]["event_uid"] == live[1]["event_uid"]
    assert all(e["updated"] == since for e in back)
    assert len(await read(http, token)) == 3
    await check(http, world, token, include_deleted="true")


async def test_managed_series_instances_keep_their_event_id_when_removed(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    body = {
        "event_id": "our-daily",
        "summary": "Ours",
        "start": "2026-01-06T09:00:00Z",
        "end": "2026-01-06T09:30:00Z",
        "recurrence": {"rules": [{"frequency": "daily", "count": 3}]},
    }
    url = f"/cronofy/v1/calendars/{cid}/events"
    assert (await http.post(url, json=body, headers=bearer(token))).status_code == 202
    await world.clock.advance(5)
    await make_channel(http, token, only_managed=True)
    live = await read(http, token, include_managed="true")
    assert [e["event_id"] for e in live] == ["our-daily"] * 3
    [master] = world.events(world.primary_calendar(EMAIL).id)

    exception(world, master, 48, status=EventStatus.CANCELLED)  # the user cancels one
    await world.clock.advance(5)
    [since] = changes(receiver)  # the app hears of it on its only_managed channel
    [gone] = await read(
        http, token, include_managed="true", include_deleted="true", last_modified=since
    )
    same_instance(gone, live[1])
    assert gone["event_id"] == "our-daily"
    assert await read(http, token, include_deleted="true") == []  # include_managed is false

    # the app deletes its series: every instance goes, no notification for its own write
    r = await http.request("DELETE", url, json={"event_id": "our-daily"}, headers=bearer(token))
    assert r.status_code == 202
    await world.clock.advance(5)
    assert len(changes(receiver)) == 1
    gone_all = await read(http, token, include_managed="true", include_deleted="true")
    assert [(e["event_uid"], e["deleted"], e["event_id"]) for e in gone_all] == [
        (e["event_uid"], True, "our-daily") for e in live
    ]
    await check(http, world, token, include_managed="true", include_deleted="true")
