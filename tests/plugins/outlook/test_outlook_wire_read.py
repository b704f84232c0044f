"""The Graph read model (msgspec): nulls, every field the conversion reads, bad input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from calbridge_outlook._convert import event_from_wire
from calbridge_outlook._wire import event_struct

from calbridge import EventStatus, ResponseStatus, SeriesRole, TimeKind, Transparency, Visibility
from calbridge.errors import ProviderResponseError

EVENT: dict[str, Any] = {
    "@odata.etag": 'W/"abc"',
    "id": "AAMkAD1",
    "changeKey": "ck1",
    "iCalUId": "040000008200E00074C5B7101A82E008",
    "subject": "Planning",
    "body": {"contentType": "text", "content": "Agenda"},
    "start": {"dateTime": "2026-01-05T09:00:00.0000000", "timeZone": "UTC"},
    "end": {"dateTime": "2026-01-05T09:45:00.0000000", "timeZone": "UTC"},
    "originalStartTimeZone": "W. Europe Standard Time",
    "originalEndTimeZone": "W. Europe Standard Time",
    "isAllDay": False,
    "isCancelled": False,
    "showAs": "tentative",
    "sensitivity": "confidential",
    "type": "singleInstance",
    "seriesMasterId": None,
    "recurrence": None,
    "attendees": [
        {
            "type": "required",
            "status": {"response": "accepted", "time": "2026-01-04T10:00:00Z"},
            "emailAddress": {"name": "P", "address": "p@example.com"},
        },
        {"type": "resource", "status": None, "emailAddress": {"address": "room@example.com"}},
        {"type": "optional", "emailAddress": {"name": "no address", "address": None}},
    ],
    "organizer": {"emailAddress": {"name": "O", "address": "o@example.com"}},
    "location": {"displayName": "Room 4.12", "locationType": "default"},
    "createdDateTime": "2026-01-04T08:00:00.1234567Z",
    "lastModifiedDateTime": "2026-01-04T09:00:00Z",
    "transactionId": None,
    "singleValueExtendedProperties": [
        {"id": "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name calbridge_app_id", "value": "k1"}
    ],
}


def test_every_field_the_conversion_reads() -> None:
    event = event_from_wire(EVENT, "cal")
    assert (event.id, event.calendar_id, event.etag) == ("AAMkAD1", "cal", "ck1")
    assert event.summary == "Planning" and event.description == "Agenda"  # noqa: PT018
    assert event.location == "Room 4.12"
    assert event.ical_uid == EVENT["iCalUId"]
    assert event.status is EventStatus.TENTATIVE
    assert event.transparency is Transparency.OPAQUE
    assert event.visibility is Visibility.CONFIDENTIAL
    assert event.series_role is SeriesRole.SINGLE
    assert event.start.kind is TimeKind.ZONED and event.start.tzid == "Europe/Berlin"  # noqa: PT018
    assert event.start.as_utc() == dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
    assert [(a.email, a.response, a.resource) for a in event.attendees] == [
        ("p@example.com", ResponseStatus.ACCEPTED, False),
        ("room@example.com", ResponseStatus.NEEDS_ACTION, True),
    ]
    assert event.organizer is not None and event.organizer.email == "o@example.com"  # noqa: PT018
    assert event.created == dt.datetime(2026, 1, 4, 8, 0, 0, 123456, tzinfo=dt.UTC)
    assert event.raw == EVENT


def test_nulls_read_as_absent() -> None:
    """Graph writes null for what is not there: all-day and cancelled default to false."""
    nulls = {k: None for k in EVENT if k not in ("id", "start", "end")}
    event = event_from_wire({**nulls, "id": "x", "start": EVENT["start"], "end": EVENT["end"]}, "c")
    assert event.status is EventStatus.CONFIRMED
    assert event.start.kind is TimeKind.ZONED
    assert event.attendees == () and event.organizer is None  # noqa: PT018
    assert event.summary is None and event.location is None  # noqa: PT018


def test_an_all_day_occurrence_of_a_series() -> None:
    data = {
        **EVENT,
        "isAllDay": True,
        "type": "occurrence",
        "seriesMasterId": "master",
        "originalStart": "2026-01-05T00:00:00Z",
        "start": {"dateTime": "2026-01-05T00:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-06T00:00:00.0000000", "timeZone": "UTC"},
    }
    event = event_from_wire(data, "cal")
    assert event.start.kind is TimeKind.DATE and event.start.date == dt.date(2026, 1, 5)  # noqa: PT018
    assert event.series_role is SeriesRole.INSTANCE
    assert event.recurring_event_id == "master"
    assert event.original_start is not None and event.original_start.kind is TimeKind.DATE  # noqa: PT018


@pytest.mark.parametrize(
    "data",
    [
        {"subject": "no id"},
        {"id": None},
        {"id": 7},
        {"id": "x", "start": {"timeZone": "UTC"}},
        {"id": "x", "attendees": {"emailAddress": {}}},
        {"id": "x", "isAllDay": "yes"},
        "not an object",
    ],
)
def test_a_malformed_event_is_a_typed_error(data: Any) -> None:
    with pytest.raises(ProviderResponseError, match="unreadable event"):
        event_struct(data)
