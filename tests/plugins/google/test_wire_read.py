"""The Google wire model (msgspec) reads events alike from JSON text and from decoded JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from calbridge_google._convert import event_from_wire, is_tombstone
from calbridge_google._wire import GEvent, event_struct, parse

from calbridge import SeriesRole
from calbridge.errors import ProviderResponseError

TIMED: dict[str, Any] = {
    "kind": "calendar#event",
    "etag": '"3181161784712000"',
    "id": "abc123",
    "status": "confirmed",
    "created": "2026-01-05T09:00:00.000Z",
    "updated": "2026-01-06T10:30:00.000Z",
    "summary": "Planning",
    "description": "Agenda",
    "location": "Room 4.12",
    "organizer": {"email": "a@example.com", "displayName": "A", "self": True},
    "start": {"dateTime": "2026-01-05T10:00:00+01:00", "timeZone": "Europe/Paris"},
    "end": {"dateTime": "2026-01-05T10:45:00+01:00", "timeZone": "Europe/Paris"},
    "iCalUID": "abc123@google.com",
    "sequence": 2,
    "attendees": [
        {"email": "p@example.com", "displayName": "P", "responseStatus": "accepted"},
        {"email": "room@example.com", "resource": True, "responseStatus": "needsAction"},
        {"email": "o@example.com", "optional": True, "organizer": True},
        {"displayName": "no email"},
    ],
    "transparency": "transparent",
    "visibility": "private",
    "extendedProperties": {"private": {"app_id": "k1"}, "shared": {"x": "y"}},
    "reminders": {"useDefault": True},
    "conferenceData": {"entryPoints": [{"uri": "https://meet.example"}]},
}
EVENTS: list[dict[str, Any]] = [
    TIMED,
    {
        "id": "day",
        "status": "tentative",
        "start": {"date": "2026-01-07"},
        "end": {"date": "2026-01-08"},
        "visibility": "confidential",
    },
    {
        "id": "master",
        "start": {"dateTime": "2026-01-05T09:00:00Z", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-05T09:30:00Z", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO"],
    },
    {
        "id": "master_20260112T090000Z",
        "recurringEventId": "master",
        "originalStartTime": {"dateTime": "2026-01-12T09:00:00Z", "timeZone": "UTC"},
        "start": {"dateTime": "2026-01-12T11:00:00Z", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-12T11:30:00Z", "timeZone": "UTC"},
    },
    {
        "id": "master_20260119T090000Z",
        "status": "cancelled",
        "recurringEventId": "master",
        "originalStartTime": {"dateTime": "2026-01-19T09:00:00Z"},
    },
    {
        "id": "offset",
        "start": {"dateTime": "2026-01-05T09:00:00-05:00"},
        "end": {"dateTime": "2026-01-05T10:00:00-05:00"},
    },
]


@pytest.mark.parametrize("data", EVENTS, ids=lambda d: d["id"])
@pytest.mark.parametrize("expanded", [True, False])
def test_reads_text_and_decoded_json_alike(data: dict[str, Any], expanded: bool) -> None:
    """Every field the conversion reads comes out the same from a dict and from JSON text."""
    fast = event_from_wire(event_struct(data), "primary", dict(data), expanded=expanded)
    text = parse(json.dumps(data).encode(), GEvent)
    assert text == event_struct(data)
    slow = event_from_wire(text, "primary", dict(data), expanded=expanded)
    assert fast == slow
    assert fast.raw == data


def test_the_fields_come_through() -> None:
    event = event_from_wire(event_struct(TIMED), "primary", dict(TIMED))
    assert [a.email for a in event.attendees] == [
        "p@example.com",
        "room@example.com",
        "o@example.com",
    ]
    assert event.attendees[1].resource and event.attendees[2].optional  # noqa: PT018
    assert event.properties == {"app_id": "k1"}
    assert event.start.tzid == "Europe/Paris"
    assert event.etag == TIMED["etag"]
    exception = event_from_wire(event_struct(EVENTS[3]), "primary", dict(EVENTS[3]))
    assert exception.series_role is SeriesRole.EXCEPTION
    assert exception.recurring_event_id == "master"
    assert is_tombstone(event_struct({"id": "gone", "status": "cancelled"}))
    assert not is_tombstone(event_struct(EVENTS[4]))


@pytest.mark.parametrize(
    "data",
    [
        {"id": 5},
        {"id": "x", "start": "2026-01-05"},
        {"id": "x", "attendees": {"email": "a"}},
        {"id": "x", "extendedProperties": {"private": {"k": 1}}},
        ["not", "an", "object"],
        None,
    ],
)
def test_a_malformed_event_is_a_typed_error(data: Any) -> None:
    with pytest.raises(ProviderResponseError, match="unreadable GEvent"):
        event_struct(data)
