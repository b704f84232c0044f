"""Wire <-> domain conversion details."""

from __future__ import annotations

import datetime as dt

import attrs
import pytest
from calbridge_cronofy import _convert as convert
from calbridge_cronofy._wire import WIRE, CronofyEvent, LocalizedTime, parse
from calbridge_cronofy.testing import event_json

import calbridge
from calbridge.errors import InvalidRequest, ProviderResponseError


def test_fast_path_and_wire_class_agree() -> None:
    raw = event_json(
        1,
        event_id="k1",
        start={"time": "2026-01-06T10:00:00+01:00", "tzid": "Europe/Paris"},
        end={"time": "2026-01-06T11:00:00+01:00", "tzid": "Europe/Paris"},
    )
    wire = parse(raw, CronofyEvent)
    assert isinstance(wire.start, LocalizedTime)
    assert wire.start.tzid == "Europe/Paris"
    assert wire.attendees[0].email == "example@cronofy.com"
    fast = convert.event_from_json(raw)
    slow = convert.event_from_wire(wire)
    assert attrs.evolve(fast, raw={}) == attrs.evolve(slow, raw={})
    assert fast.raw is raw
    assert fast.start.datetime == dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC)
    assert fast.start.tzid == "Europe/Paris"
    assert WIRE.unstructure(wire)["start"] == {
        "time": "2026-01-06T10:00:00+01:00",
        "tzid": "Europe/Paris",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-06", calbridge.EventTime.all_day(dt.date(2026, 1, 6))),
        (
            {"time": "2026-01-06", "tzid": "Europe/London"},
            calbridge.EventTime.all_day(dt.date(2026, 1, 6)),
        ),
        (
            "2026-01-06T09:00:00Z",
            calbridge.EventTime.zoned(dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC), "UTC"),
        ),
        (
            LocalizedTime(time="2026-01-06T09:00:00Z"),
            calbridge.EventTime.zoned(dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC), "UTC"),
        ),
    ],
)
def test_times(value: object, expected: calbridge.EventTime) -> None:
    assert convert.time_from_wire(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["yesterday", {"tzid": "UTC"}, 42])
def test_bad_times(bad: object) -> None:
    with pytest.raises(ProviderResponseError):
        convert.time_from_wire(bad)  # type: ignore[arg-type]
    with pytest.raises(ProviderResponseError):
        convert.event_from_json(event_json(0, start=bad))


def test_attendee_statuses_and_interning_stays_bounded() -> None:
    raw = event_json(
        0,
        attendees=[
            {"email": "a@x", "display_name": "A", "status": s}
            for s in ("accepted", "declined", "tentative", "needs_action", "unknown", "weird")
        ],
    )
    ev = convert.event_from_json(raw)
    assert [a.response.value for a in ev.attendees] == [
        "accepted",
        "declined",
        "tentative",
        "needs_action",
        "unknown",
        "unknown",
    ]
    twice = convert.event_from_json(raw)
    assert twice.attendees[0] is ev.attendees[0]  # shared, immutable
    for i in range(convert._INTERN_MAX + 10):
        convert.event_from_json(
            event_json(
                i,
                start=f"2026-01-06T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z",
                attendees=[{"email": f"p{i}@x", "status": "accepted"}],
            )
        )
    assert len(convert._people) <= convert._INTERN_MAX
    assert len(convert._times) <= convert._INTERN_MAX


def test_recurrence_until_and_unsupported_lines() -> None:
    draft = calbridge.EventDraft(
        summary="r",
        start=calbridge.EventTime.zoned(dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC), "UTC"),
        end=calbridge.EventTime.zoned(dt.datetime(2026, 1, 6, 10, tzinfo=dt.UTC), "UTC"),
        recurrence=("RRULE:FREQ=DAILY;UNTIL=20260131T000000Z;WKST=MO",),
    )
    body = convert.upsert_body(draft, event_id="k")
    assert body["recurrence"] == {"rules": [{"frequency": "daily", "until": "2026-01-31"}]}
    assert body["tzid"] == "Etc/UTC"
    exdate = calbridge.EventDraft(
        start=draft.start,
        end=draft.end,
        recurrence=("RRULE:FREQ=DAILY", "EXDATE:20260107T090000Z"),
    )
    with pytest.raises(InvalidRequest, match="EXDATE"):
        convert.upsert_body(exdate, event_id="k")
    with pytest.raises(ValueError, match="exactly one"):
        convert.upsert_body(draft, event_id="k", event_uid="evt_1")


def test_id_field() -> None:
    assert convert.id_field("evt_external_1") == "event_uid"
    assert convert.id_field("booking-1") == "event_id"
