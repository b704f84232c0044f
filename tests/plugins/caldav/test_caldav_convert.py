"""iCalendar <-> domain conversion and DAV answers, without a server."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest
from calbridge_caldav._convert import parse_resource, resource_from_draft, split_event_id
from calbridge_caldav._dav import error_for, multistatus

from calbridge import (
    Attendee,
    Event,
    EventDraft,
    EventStatus,
    EventTime,
    ResponseStatus,
    SeriesRole,
    TimeKind,
    Transparency,
    Visibility,
)
from calbridge.errors import Conflict, ProviderResponseError, SyncCursorExpired


def _resource(body: str, name: str = "r.ics") -> list[Event]:
    text = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n{body}END:VCALENDAR\r\n"
    return parse_resource(f"/u/c/{name}", '"e1"', text).stored("/u/c/")


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("abc.ics", ("abc.ics", None)),
        ("abc.ics_20261201T080000Z", ("abc.ics", "20261201T080000Z")),
        ("abc.ics_20261201", ("abc.ics", "20261201")),
        ("meeting_notes.ics", ("meeting_notes.ics", None)),
        ("x_2026.ics", ("x_2026.ics", None)),
    ],
)
def test_event_ids_split_into_resource_and_original_start(
    event_id: str, expected: tuple[str, str | None]
) -> None:
    """An occurrence id is ``<resource>_<original start>``; other underscores stay."""
    assert split_event_id(event_id) == expected


def test_times_all_day_floating_duration_and_unknown_zones() -> None:
    """A date with no DTEND lasts the day; DURATION gives the end; a time without zone is
    floating; a custom VTIMEZONE without an IANA name is read in UTC at the same instant."""
    day, floating, custom = (
        _resource(
            "BEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261224\r\n"
            "END:VEVENT\r\n"
        )
        + _resource(
            "BEGIN:VEVENT\r\nUID:b\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261224T090000\r\n"
            "DURATION:PT90M\r\nEND:VEVENT\r\n"
        )
        + _resource(
            "BEGIN:VTIMEZONE\r\nTZID:Custom Zone\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
            "TZOFFSETFROM:+0300\r\nTZOFFSETTO:+0300\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
            "BEGIN:VEVENT\r\nUID:c\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART;TZID=Custom Zone:20261224T090000\r\nDTEND;TZID=Custom Zone:20261224T100000\r\n"
            "END:VEVENT\r\n"
        )
    )

    assert (day.start, day.end) == (
        EventTime.all_day(dt.date(2026, 12, 24)),
        EventTime.all_day(dt.date(2026, 12, 25)),
    )
    assert floating.start.kind is TimeKind.FLOATING
    assert floating.end.datetime == dt.datetime(2026, 12, 24, 10, 30)
    assert custom.start.tzid == "UTC"
    assert custom.start.as_utc() == dt.datetime(2026, 12, 24, 6, tzinfo=dt.UTC)


def test_a_draft_round_trips_through_icalendar() -> None:
    """Every field of a draft is written and read back."""
    paris = EventTime.zoned(dt.datetime(2026, 12, 1, 9, tzinfo=ZoneInfo("Europe/Paris")))
    draft = EventDraft(
        summary="Review; with, punctuation",
        description="line one\nline two",
        location="Room 1",
        start=paris,
        end=EventTime.zoned(paris.as_utc() + dt.timedelta(hours=1), "Europe/Paris"),
        status=EventStatus.TENTATIVE,
        transparency=Transparency.TRANSPARENT,
        visibility=Visibility.PRIVATE,
        attendees=(
            Attendee(email="a@example.com", name="Ann, A.", response=ResponseStatus.ACCEPTED),
            Attendee(email="room@example.com", resource=True, optional=True),
        ),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=3", "EXDATE;TZID=Europe/Paris:20261208T090000"),
        properties={"booking": "981", "source": "app"},
    )
    text = resource_from_draft(draft, uid="u-1").to_ical().decode()
    (event,) = parse_resource("/u/c/x.ics", None, text).stored("/u/c/")

    assert "BEGIN:VTIMEZONE" in text
    assert event.series_role is SeriesRole.MASTER
    assert event.ical_uid == "u-1"
    assert (event.summary, event.description, event.location) == (
        draft.summary,
        draft.description,
        draft.location,
    )
    assert event.start == draft.start
    assert event.end.as_utc() == draft.end.as_utc()
    assert (event.status, event.transparency, event.visibility) == (
        EventStatus.TENTATIVE,
        Transparency.TRANSPARENT,
        Visibility.PRIVATE,
    )
    assert event.attendees == draft.attendees
    assert event.recurrence == draft.recurrence
    assert event.properties == draft.properties


def _answer(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "application/xml"})


def test_dav_errors_map_onto_calbridge_errors() -> None:
    """An invalid sync token is SyncCursorExpired; a failed If-Match is Conflict."""
    token = b'<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>'

    assert isinstance(error_for(_answer(403, token), what="sync"), SyncCursorExpired)
    assert isinstance(error_for(_answer(412, b""), what="put"), Conflict)


def test_multistatus_refuses_a_doctype() -> None:
    """Entity tricks never reach the parser: a DOCTYPE is refused."""
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><multistatus xmlns="DAV:"/>'

    with pytest.raises(ProviderResponseError):
        list(multistatus(body, what="propfind"))
