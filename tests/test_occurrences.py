"""Occurrence identity across providers (calbridge._occurrences)."""

from __future__ import annotations

import datetime as dt

import attrs

from calbridge import Event, EventTime, SeriesRole, TimeRange
from calbridge._occurrences import (
    OriginalStarts,
    instances,
    occurrence_identity,
    stamp,
)

UTC = dt.UTC


def _t(day: int, hour: int = 9, tz: str = "UTC") -> EventTime:
    from zoneinfo import ZoneInfo

    return EventTime.zoned(dt.datetime(2027, 3, day, hour, tzinfo=ZoneInfo(tz)), tz)


def _occurrence(start: EventTime, *, id: str = "evt_1", original: EventTime | None = None) -> Event:
    return Event(
        id=id,
        calendar_id="cal",
        provider="cronofy",
        start=start,
        end=start,
        summary="1:1",
        ical_uid="uid-1",
        series_role=SeriesRole.INSTANCE,
        recurring_event_id="series",
        original_start=original,
    )


def test_identity_of_singles_and_occurrences() -> None:
    single = attrs.evolve(
        _occurrence(_t(1)), series_role=SeriesRole.SINGLE, recurring_event_id=None
    )
    assert occurrence_identity(single) == "uid-1"
    assert occurrence_identity(single, "booking-9") == "booking-9"
    moved = _occurrence(_t(2, 13), original=_t(2))
    assert occurrence_identity(moved) == "uid-1@20270302T090000Z"
    assert occurrence_identity(moved, "booking-9") == "booking-9@20270302T090000Z"
    all_day = _occurrence(EventTime.all_day(dt.date(2027, 3, 4)))
    assert occurrence_identity(all_day) == "uid-1@2027-03-04"


def test_original_starts_in_order_known_then_other_provider_then_start() -> None:
    legacy_moved = _occurrence(_t(9, 14), id="g_20270309T090000Z", original=_t(9))
    starts = OriginalStarts({"evt_known": _t(2)})
    starts.learn([legacy_moved])
    # 1. the same provider event was given an original start before
    assert starts.fill(_occurrence(_t(2, 16), id="evt_known")).original_start == _t(2)
    # 2. the other provider's moved occurrence at the same start says where it came from
    filled = starts.fill(_occurrence(_t(9, 14), id="evt_other"))
    assert filled.original_start == _t(9)
    assert filled.series_role is SeriesRole.EXCEPTION
    # 3. nobody saw it moved: its start
    plain = starts.fill(_occurrence(_t(16), id="evt_plain"))
    assert plain.original_start == _t(16)
    assert plain.series_role is SeriesRole.INSTANCE
    # an occurrence that reports its original start keeps it
    given = _occurrence(_t(23, 11), original=_t(23))
    assert starts.fill(given) is given


def test_instances_follow_the_wall_clock_and_skip_exceptions() -> None:
    master = Event(
        id="series",
        calendar_id="cal",
        provider="google",
        start=_t(22, 9, "Europe/London"),
        end=_t(22, 10, "Europe/London"),
        summary="standup",
        ical_uid="uid-2",
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=3",),
        series_role=SeriesRole.MASTER,
    )
    window = TimeRange(
        start=dt.datetime(2027, 3, 1, tzinfo=UTC), end=dt.datetime(2027, 5, 1, tzinfo=UTC)
    )
    every = instances(master, window)
    # London moves to summer time on 28 March: 09:00 local is 09:00Z, then 08:00Z
    assert [stamp(e.start) for e in every] == [
        "20270322T090000Z",
        "20270329T080000Z",
        "20270405T080000Z",
    ]
    assert {e.series_role for e in every} == {SeriesRole.INSTANCE}
    assert all(e.original_start == e.start and not e.recurrence for e in every)
    assert every[1].id == "series_20270329T080000Z"
    kept = instances(master, window, overridden={"20270329T080000Z"})
    assert [stamp(e.start) for e in kept] == ["20270322T090000Z", "20270405T080000Z"]
