"""Windows <-> IANA zones, dateTimeTimeZone text and patternedRecurrence <-> RRULE round trips."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from calbridge_outlook._recurrence import (
    DAYS,
    INDEXES,
    UnsupportedRecurrence,
    pattern_from_rrule,
    rrule_from_pattern,
)
from calbridge_outlook._tz import (
    WINDOWS_TO_IANA,
    format_graph_datetime,
    parse_graph_datetime,
    to_iana,
    to_windows,
    zone,
)
from dateutil import rrule
from hypothesis import given, settings
from hypothesis import strategies as st
from tzlocal import windows_tz

WINDOWS = sorted(WINDOWS_TO_IANA)
IANA = sorted(k for k in windows_tz.tz_win if k)
#: zones whose rules in the installed tzdata moved after the CLDR release tzlocal ships
#: (tzdata 2024b+: Scoresbysund left UTC-1; Casey/Vostok changed offsets)
TZDATA_NEWER_THAN_CLDR = {"America/Scoresbysund", "Antarctica/Casey", "Antarctica/Vostok"}


@given(st.sampled_from(WINDOWS))
def test_every_windows_zone_round_trips(windows: str) -> None:
    """Windows -> IANA -> Windows is the identity for every zone CLDR lists."""
    assert to_windows(to_iana(windows)) == windows


@given(st.sampled_from(IANA), st.sampled_from([1, 4, 7, 10]))
def test_iana_to_windows_keeps_the_offset(iana: str, month: int) -> None:
    """An IANA zone's Windows zone has the same UTC offset (today's rules)."""
    instant = dt.datetime(2026, month, 15, 12, tzinfo=dt.UTC)
    theirs = instant.astimezone(ZoneInfo(iana)).utcoffset()
    ours = instant.astimezone(zone(to_windows(iana))).utcoffset()
    assert theirs == ours or iana in TZDATA_NEWER_THAN_CLDR


def test_known_divergences_are_still_divergent() -> None:
    """The exception list above is not a blanket excuse: each entry really diverges."""
    for iana in TZDATA_NEWER_THAN_CLDR:
        offsets = {
            dt.datetime(2026, m, 15, tzinfo=dt.UTC).astimezone(ZoneInfo(iana)).utcoffset()
            != dt.datetime(2026, m, 15, tzinfo=dt.UTC)
            .astimezone(zone(to_windows(iana)))
            .utcoffset()
            for m in (1, 7)
        }
        assert True in offsets, iana


def test_names_graph_sends() -> None:
    assert to_iana("Pacific Standard Time") == "America/Los_Angeles"
    assert to_iana("W. Europe Standard Time") == "Europe/Berlin"
    assert to_iana("tzone://Microsoft/Custom") == "UTC"
    assert to_iana("Europe/Paris") == "Europe/Paris"  # IANA names are accepted as they are
    assert to_windows("Europe/Paris") == "Romance Standard Time"
    assert to_windows("US/Pacific") == "Pacific Standard Time"  # a link CLDR does not list
    assert to_windows("UTC") == "UTC"


@given(
    st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    st.sampled_from([*WINDOWS, "UTC", "Europe/Paris", "Asia/Kolkata"]),
)
def test_graph_datetime_text_round_trips(local: dt.datetime, tz_name: str) -> None:
    """Seven fractional digits, no offset; reads back to the same wall clock in the zone."""
    text = format_graph_datetime(local)
    assert len(text.split(".")[1]) == 7
    assert "+" not in text
    assert not text.endswith("Z")
    back = parse_graph_datetime(text, tz_name)
    assert back.replace(tzinfo=None) == local
    assert back.tzinfo is not None


def test_graph_datetime_accepts_offsets_and_z() -> None:
    assert parse_graph_datetime("2026-01-05T09:00:00Z", "Pacific Standard Time") == dt.datetime(
        2026, 1, 5, 9, tzinfo=dt.UTC
    )
    when = parse_graph_datetime("2026-01-05T09:00:00.1234567+01:00", None)
    assert when.utcoffset() == dt.timedelta(hours=1)
    assert when.microsecond == 123456


# -- patternedRecurrence <-> RRULE ---------------------------------------------------------

_DAY_NAMES = list(DAYS)


@st.composite
def patterns(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "daily",
                "weekly",
                "absoluteMonthly",
                "relativeMonthly",
                "absoluteYearly",
                "relativeYearly",
            ]
        )
    )
    pattern: dict[str, Any] = {"type": kind, "interval": draw(st.integers(1, 5))}
    days = sorted(
        draw(st.sets(st.sampled_from(_DAY_NAMES), min_size=1, max_size=7)), key=_DAY_NAMES.index
    )
    if kind == "weekly":
        pattern["daysOfWeek"] = days
        pattern["firstDayOfWeek"] = draw(st.sampled_from(_DAY_NAMES))
    if kind in ("relativeMonthly", "relativeYearly"):
        pattern["daysOfWeek"] = days
        pattern["index"] = draw(st.sampled_from(list(INDEXES)))
    if kind in ("absoluteMonthly", "absoluteYearly"):
        pattern["dayOfMonth"] = draw(st.integers(1, 28))
    if kind in ("absoluteYearly", "relativeYearly"):
        pattern["month"] = draw(st.integers(1, 12))
    start = draw(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2090, 1, 1)))
    tz_name = draw(st.sampled_from(["UTC", "Pacific Standard Time", "W. Europe Standard Time"]))
    rng: dict[str, Any] = {"startDate": start.isoformat(), "recurrenceTimeZone": tz_name}
    end_kind = draw(st.sampled_from(["noEnd", "endDate", "numbered"]))
    rng["type"] = end_kind
    if end_kind == "endDate":
        rng["endDate"] = (start + dt.timedelta(days=draw(st.integers(0, 3000)))).isoformat()
    if end_kind == "numbered":
        rng["numberOfOccurrences"] = draw(st.integers(1, 500))
    return {"pattern": pattern, "range": rng}


def _context(rec: dict[str, Any], all_day: bool, start_time: dt.time) -> dict[str, Any]:
    tz_name = rec["range"]["recurrenceTimeZone"]
    return {"all_day": all_day, "tz": zone(tz_name), "start_time": start_time}


@settings(max_examples=300)
@given(patterns(), st.booleans(), st.times())
def test_pattern_to_rrule_and_back(rec: dict[str, Any], all_day: bool, t: dt.time) -> None:
    """patternedRecurrence -> RRULE -> patternedRecurrence is the identity."""
    start_time = dt.time() if all_day else t.replace(microsecond=0)
    line = rrule_from_pattern(rec, **_context(rec, all_day, start_time))
    tz_name = rec["range"]["recurrenceTimeZone"]
    back, exdates = pattern_from_rrule(
        [line],
        start=dt.date.fromisoformat(rec["range"]["startDate"]),
        tz_name=tz_name,
        tz=zone(tz_name),
    )
    assert exdates == []
    assert back == rec


@settings(max_examples=300)
@given(patterns(), st.booleans())
def test_rrule_to_pattern_and_back(rec: dict[str, Any], all_day: bool) -> None:
    """A canonical RRULE -> patternedRecurrence -> RRULE is the identity, and dateutil
    accepts every RRULE written."""
    ctx = _context(rec, all_day, dt.time(9, 30))
    line = rrule_from_pattern(rec, **ctx)
    tz_name = rec["range"]["recurrenceTimeZone"]
    start = dt.date.fromisoformat(rec["range"]["startDate"])
    pattern, _ = pattern_from_rrule([line], start=start, tz_name=tz_name, tz=zone(tz_name))
    assert rrule_from_pattern(pattern, **ctx) == line
    anchor = dt.datetime.combine(start, dt.time() if all_day else dt.time(9, 30))
    if not all_day:
        anchor = anchor.replace(tzinfo=ctx["tz"])
    first = rrule.rrulestr(line.removeprefix("RRULE:"), dtstart=anchor)
    assert first is not None


def _expand(line: str, start: dt.datetime, n: int = 4) -> list[dt.date]:
    rule = rrule.rrulestr(line.removeprefix("RRULE:"), dtstart=start)
    return [d.date() for d in list(rule)[:n]]


def test_relative_monthly_last_friday() -> None:
    rec = {
        "pattern": {
            "type": "relativeMonthly",
            "interval": 1,
            "daysOfWeek": ["friday"],
            "index": "last",
        },
        "range": {"type": "numbered", "numberOfOccurrences": 3, "startDate": "2026-01-01"},
    }
    line = rrule_from_pattern(rec, all_day=True, tz=dt.UTC, start_time=dt.time())
    assert line == "RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=FR;BYSETPOS=-1;COUNT=3"
    assert _expand(line, dt.datetime(2026, 1, 1)) == [
        dt.date(2026, 1, 30),
        dt.date(2026, 2, 27),
        dt.date(2026, 3, 27),
    ]


def test_ordinal_byday_reads_as_an_index() -> None:
    pattern, _ = pattern_from_rrule(
        ["RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH"],
        start=dt.date(2026, 11, 26),
        tz_name="UTC",
        tz=dt.UTC,
    )
    assert pattern["pattern"] == {
        "type": "relativeYearly",
        "interval": 1,
        "daysOfWeek": ["thursday"],
        "index": "fourth",
        "month": 11,
    }


def test_timed_end_date_is_inclusive_in_the_recurrence_zone() -> None:
    rec = {
        "pattern": {"type": "daily", "interval": 1},
        "range": {
            "type": "endDate",
            "startDate": "2026-03-01",
            "endDate": "2026-03-03",
            "recurrenceTimeZone": "Pacific Standard Time",
        },
    }
    tz = zone("Pacific Standard Time")
    line = rrule_from_pattern(rec, all_day=False, tz=tz, start_time=dt.time(18, 0))
    assert line.endswith("UNTIL=20260304T020000Z")  # 18:00 PST on the 3rd
    start = dt.datetime(2026, 3, 1, 18, tzinfo=tz)
    assert _expand(line, start, 10) == [dt.date(2026, 3, d) for d in (1, 2, 3)]


def test_exdates_come_back_apart_and_the_rest_is_refused() -> None:
    _, exdates = pattern_from_rrule(
        ["RRULE:FREQ=DAILY", "EXDATE:20260105T090000Z"],
        start=dt.date(2026, 1, 1),
        tz_name="UTC",
        tz=dt.UTC,
    )
    assert exdates == ["EXDATE:20260105T090000Z"]
    for bad in (
        ["RRULE:FREQ=HOURLY"],
        ["RRULE:FREQ=DAILY;BYHOUR=9"],
        ["RRULE:FREQ=MONTHLY;BYMONTHDAY=-1"],
        ["RRULE:FREQ=DAILY", "RRULE:FREQ=WEEKLY"],
        ["RRULE:FREQ=MONTHLY;BYDAY=5MO"],
    ):
        with pytest.raises(UnsupportedRecurrence):
            pattern_from_rrule(bad, start=dt.date(2026, 1, 1), tz_name="UTC", tz=dt.UTC)
