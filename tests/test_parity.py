"""Parity report: occurrence-level comparison tolerant of propagation delay."""

from __future__ import annotations

import datetime as dt

import attrs

from calbridge import (
    Attendee,
    Event,
    EventStatus,
    EventTime,
    ResponseStatus,
    SeriesRole,
    TimeRange,
    Transparency,
)
from calbridge.migration import compare, occurrences

NOW = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
WINDOW = TimeRange(start=NOW - dt.timedelta(days=7), end=NOW + dt.timedelta(days=30))
OLD = NOW - dt.timedelta(days=3)


def ev(
    eid: str, uid: str, day: int, hour: int = 9, *, provider: str = "google", **kw: object
) -> Event:
    start = dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)
    kw.setdefault("updated", OLD)
    return Event(
        id=eid,
        calendar_id="c",
        provider=provider,
        ical_uid=uid,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        **kw,  # type: ignore[arg-type]
    )


def test_identical_views_are_clean() -> None:
    """Same events with different provider ids and the same iCalUIDs compare clean."""
    legacy = [ev("g1", "u1", 24), ev("g2", "u2", 25, summary="x")]
    target = [attrs.evolve(e, id="c" + e.id, provider="cronofy") for e in legacy]
    report = compare(legacy, target, WINDOW, now=NOW)
    assert report.clean
    assert report.compared == 2


def test_missing_extra_and_field_differences() -> None:
    """Missing, extra and per-field differences are reported."""
    legacy = [
        ev("g1", "u1", 24, summary="a"),
        ev("g2", "u2", 25),
        ev(
            "g3",
            "u3",
            26,
            attendees=(Attendee(email="B@x.test", response=ResponseStatus.ACCEPTED),),
        ),
    ]
    target = [
        ev("c1", "u1", 24, summary="b", provider="cronofy", transparency=Transparency.TRANSPARENT),
        ev("c9", "u9", 27, provider="cronofy"),
        ev(
            "c3",
            "u3",
            26,
            provider="cronofy",
            attendees=(Attendee(email="b@x.test", response=ResponseStatus.DECLINED),),
        ),
    ]
    report = compare(legacy, target, WINDOW, now=NOW)
    assert not report.clean
    assert [k[0] for k in report.missing] == ["u2"]
    assert [k[0] for k in report.extra] == ["u9"]
    assert {(d.ical_uid, d.field) for d in report.different} == {
        ("u1", "summary"),
        ("u1", "transparency"),
        ("u3", "attendees"),
    }


def test_recent_changes_are_pending_not_different() -> None:
    """A change younger than the grace period has not propagated yet: pending."""
    legacy = [ev("g1", "u1", 24, summary="new", updated=NOW - dt.timedelta(seconds=30))]
    target = [ev("c1", "u1", 24, summary="old", provider="cronofy")]
    report = compare(legacy, target, WINDOW, now=NOW, grace=600)
    assert report.clean
    assert report.pending == 1


def test_series_master_matches_expanded_instances_with_exceptions() -> None:
    """A legacy master + moved and cancelled exceptions equals the target's instances."""
    paris = "Europe/Paris"
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(paris)
    first = dt.datetime(2026, 11, 23, 9, tzinfo=tz)
    master = Event(
        id="m",
        calendar_id="c",
        provider="google",
        ical_uid="s1",
        summary="standup",
        start=EventTime.zoned(first, paris),
        end=EventTime.zoned(first + dt.timedelta(hours=1), paris),
        recurrence=("RRULE:FREQ=DAILY;COUNT=5",),
        series_role=SeriesRole.MASTER,
        updated=OLD,
    )
    moved_orig = first + dt.timedelta(days=1)
    moved = Event(
        id="m_2",
        calendar_id="c",
        provider="google",
        ical_uid="s1",
        summary="standup",
        start=EventTime.zoned(moved_orig + dt.timedelta(hours=2), paris),
        end=EventTime.zoned(moved_orig + dt.timedelta(hours=3), paris),
        series_role=SeriesRole.EXCEPTION,
        recurring_event_id="m",
        original_start=EventTime.zoned(moved_orig, paris),
        updated=OLD,
    )
    cancelled_orig = first + dt.timedelta(days=2)
    cancelled = attrs.evolve(
        moved,
        id="m_3",
        status=EventStatus.CANCELLED,
        original_start=EventTime.zoned(cancelled_orig, paris),
        start=EventTime.zoned(cancelled_orig, paris),
        end=EventTime.zoned(cancelled_orig + dt.timedelta(hours=1), paris),
    )
    legacy_occ = occurrences([master, moved, cancelled], WINDOW)
    assert len(legacy_occ) == 4
    # the target expands the series into instances server-side
    target = []
    for key, occ in legacy_occ.items():
        target.append(
            Event(
                id=f"t{key[1]}",
                calendar_id="c",
                provider="cronofy",
                ical_uid="s1",
                summary="standup",
                start=occ.start,
                end=occ.end,
                updated=OLD,
                series_role=SeriesRole.INSTANCE,
                recurring_event_id="series",
                original_start=EventTime.zoned(
                    dt.datetime.strptime(key[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC), "UTC"
                ),
            )
        )
    assert compare([master, moved, cancelled], target, WINDOW, now=NOW).clean
    # dropping the moved exception at the target is a difference in start/end
    shifted = [
        t
        if "20261124" not in t.id
        else attrs.evolve(
            t,
            start=EventTime.zoned(moved_orig, paris),
            end=EventTime.zoned(moved_orig + dt.timedelta(hours=1), paris),
        )
        for t in target
    ]
    report = compare([master, moved, cancelled], shifted, WINDOW, now=NOW)
    assert {d.field for d in report.different} == {"start", "end"}


def test_all_day_events_compare_by_date() -> None:
    """All-day events compare their dates, not instants."""
    day = Event(
        id="g",
        calendar_id="c",
        provider="google",
        ical_uid="d1",
        start=EventTime.all_day(dt.date(2026, 11, 25)),
        end=EventTime.all_day(dt.date(2026, 11, 26)),
        updated=OLD,
    )
    other = attrs.evolve(
        day, id="c", provider="cronofy", end=EventTime.all_day(dt.date(2026, 11, 27))
    )
    report = compare([day], [other], WINDOW, now=NOW)
    assert [d.field for d in report.different] == ["end"]
