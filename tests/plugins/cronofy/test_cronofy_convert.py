"""Wire <-> domain conversion details."""

from __future__ import annotations

import datetime as dt
import json
import pickle

import attrs
import pytest
from calbridge_cronofy import _convert as convert
from calbridge_cronofy._wire import LocalizedTime, decode_event, decode_page
from calbridge_cronofy.testing import event_json

import calbridge
from calbridge.errors import InvalidRequest, ProviderResponseError


def _page(*events: object, next_page: str | None = None) -> bytes:
    pages: dict[str, object] = {"current": 1, "total": 1}
    if next_page:
        pages["next_page"] = next_page
    return json.dumps({"pages": pages, "events": list(events)}).encode()


def test_page_path_and_dict_path_agree() -> None:
    raw = event_json(
        1,
        event_id="k1",
        start={"time": "2026-01-06T10:00:00+01:00", "tzid": "Europe/Paris"},
        end={"time": "2026-01-06T11:00:00+01:00", "tzid": "Europe/Paris"},
    )
    raw["brand_new_field"] = {"nested": [1, 2]}  # Cronofy adds fields: kept in raw
    page = decode_page(_page(raw, next_page="https://api.cronofy.com/v1/events/pages/x"))
    assert page.pages.next_page == "https://api.cronofy.com/v1/events/pages/x"
    wire = decode_event(page.events[0])
    assert isinstance(wire.start, LocalizedTime)
    assert wire.start.tzid == "Europe/Paris"
    assert wire.attendees is not None
    assert wire.attendees[0].email == "example@cronofy.com"
    (from_page,) = convert.events_from_page(page)
    from_dict = convert.event_from_json(raw)
    assert attrs.evolve(from_page, raw={}) == attrs.evolve(from_dict, raw={})
    assert from_dict.raw is raw
    assert isinstance(from_page.raw, calbridge.RawPayload)
    assert from_page.raw == raw
    assert from_page.raw["brand_new_field"] == {"nested": [1, 2]}
    assert json.loads(from_page.raw.text) == raw
    assert from_page.start.datetime == dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC)
    assert from_page.start.tzid == "Europe/Paris"
    # the domain converter writes the lazily decoded payload like any mapping
    assert calbridge.make_converter().unstructure(from_page)["raw"] == raw


def test_deleted_events_are_left_out_unless_asked_for() -> None:
    page = decode_page(_page(event_json(1), event_json(2, deleted=True)))
    assert [e.id for e in convert.events_from_page(page)] == [event_json(1)["event_uid"]]
    assert len(convert.events_from_page(page, deleted=True)) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"pages": {}}',  # no events
        b'{"events": {}}',
        b'{"events": [], "pages": {"next_page": 5}}',
    ],
)
def test_unreadable_pages_are_typed_errors(body: bytes) -> None:
    with pytest.raises(ProviderResponseError):
        decode_page(body)


@pytest.mark.parametrize(
    "event",
    [
        {"summary": "no ids"},
        {**event_json(1), "summary": 42},
        {**event_json(1), "attendees": "everyone"},
        "a string",
    ],
)
def test_unreadable_events_are_typed_errors(event: object) -> None:
    page = decode_page(_page(event))
    with pytest.raises(ProviderResponseError):
        convert.events_from_page(page)
    with pytest.raises(ProviderResponseError):
        convert.event_from_json(event)  # type: ignore[arg-type]


def test_raw_payload_is_a_lazy_read_only_mapping() -> None:
    payload = calbridge.RawPayload(b'{"a": 1, "b": [true]}', provider="cronofy")
    assert payload._data is None  # nothing decoded yet
    assert repr(payload) == "RawPayload(21 bytes)"  # never the content
    assert payload["a"] == 1
    assert payload.get("zz") is None
    assert "b" in payload
    assert dict(payload) == {"a": 1, "b": [True]}
    assert len(payload) == 2
    assert payload == calbridge.RawPayload(b'{"b":[true],"a":1}')
    assert payload != {"a": 2}
    assert pickle.loads(pickle.dumps(payload)) == payload
    with pytest.raises(TypeError):
        hash(payload)
    with pytest.raises(ProviderResponseError, match="not a JSON object"):
        calbridge.RawPayload(b"[1, 2]", provider="cronofy")["x"]
    with pytest.raises(ProviderResponseError):
        len(calbridge.RawPayload(b"{broken", provider="cronofy"))


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
        (
            LocalizedTime(time="2026-01-06T10:00:00+01:00", tzid="Europe/Paris"),
            calbridge.EventTime.zoned(dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC), "Europe/Paris"),
        ),
    ],
)
def test_times(value: object, expected: calbridge.EventTime) -> None:
    assert convert.time_from_wire(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    ["yesterday", {"tzid": "UTC"}, 42, {"time": 42}, {"time": ["2026-01-06"]}, "2026-01-0x"],
)
def test_bad_times(bad: object) -> None:
    with pytest.raises(ProviderResponseError):
        convert.time_from_wire(bad)  # type: ignore[arg-type]
    with pytest.raises(ProviderResponseError):
        convert.event_from_json(event_json(0, start=bad))


def _zoned(text: str, tzid: str) -> calbridge.EventTime:
    return calbridge.EventTime.zoned(dt.datetime.fromisoformat(text), tzid)


def test_page_times_keep_their_zones() -> None:
    """Each start/end keeps its own zone (UTC when Cronofy names none); all-day dates are
    dates whatever the zone."""

    def at(hour: int, tzid: str | None = "Europe/Paris") -> dict[str, str | None]:
        return {"time": f"2026-01-06T{hour:02d}:00:00Z", "tzid": tzid}

    raws = [
        event_json(1, start=at(9), end=at(10)),
        event_json(2, start=at(10), end=at(11)),  # back to back
        event_json(3, start=at(11, "America/New_York"), end="2026-01-06T12:00:00Z"),
        event_json(4, start="2026-01-06T12:00:00Z", end=at(13, None)),  # no zone: UTC
        event_json(5, start="2026-01-07", end="2026-01-08"),
        event_json(6, start={"time": "2026-01-07", "tzid": "Europe/Paris"}, end="2026-01-08"),
    ]
    events = convert.events_from_page(decode_page(_page(*raws)))
    e1, e2, e3, e4, e5, e6 = events
    assert e1.start == _zoned("2026-01-06T09:00:00+00:00", "Europe/Paris")
    assert e2.start == e1.end
    assert e2.end == _zoned("2026-01-06T11:00:00+00:00", "Europe/Paris")
    assert e3.start == _zoned("2026-01-06T11:00:00+00:00", "America/New_York")  # not e2.end
    assert e3.end == e4.start == _zoned("2026-01-06T12:00:00+00:00", "UTC")
    assert e4.end == _zoned("2026-01-06T13:00:00+00:00", "UTC")
    assert e5.start == calbridge.EventTime.all_day(dt.date(2026, 1, 7))
    assert (e6.start, e6.end) == (e5.start, e5.end)
    for event, raw in zip(events, raws, strict=True):  # the dict path agrees
        assert attrs.evolve(event, raw={}) == attrs.evolve(convert.event_from_json(raw), raw={})
        assert event.raw == raw


def test_attendee_statuses() -> None:
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
    other = convert.event_from_json({**raw, "attendees": raw["attendees"][:2]})
    assert other.attendees == ev.attendees[:2]


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
