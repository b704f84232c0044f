"""Conversion between Google's wire model and calbridge's domain model.

Rules (Google Calendar v3):

* ``start``/``end`` carry ``date`` (all-day, end exclusive) or ``dateTime`` with an IANA
  ``timeZone``; an offset-only ``dateTime`` becomes a zoned time in ``"UTC"``'s sense of
  the offset (tzid ``"UTC"``), as :class:`calbridge.EventTime` documents.
* Recurring events are always written with ``start.timeZone`` (Google expands the series in
  that zone and refuses offset-only starts), and their recurrence lines carry no DTSTART.
* A cancelled event with ``recurringEventId`` is a cancelled *exception* (it hides one
  instance of a live series); any other cancelled event is a deletion (a tombstone).
* The app's correlation properties live in ``extendedProperties.private``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calbridge import (
    Attendee,
    Calendar,
    Event,
    EventDraft,
    EventStatus,
    EventTime,
    Person,
    ResponseStatus,
    SeriesRole,
    TimeKind,
    Transparency,
    Visibility,
)
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import wire_dict

from ._wire import (
    CalendarListEntry,
    EventDateTime,
    ExtendedProperties,
    GAttendee,
    GEvent,
)

__all__ = [
    "calendar_from_wire",
    "client_event_id",
    "event_from_wire",
    "event_to_wire",
    "format_datetime",
    "is_tombstone",
    "parse_datetime",
]

PROVIDER = "google"

_RESPONSES = {
    "needsAction": ResponseStatus.NEEDS_ACTION,
    "accepted": ResponseStatus.ACCEPTED,
    "declined": ResponseStatus.DECLINED,
    "tentative": ResponseStatus.TENTATIVE,
}
_RESPONSES_OUT = {v: k for k, v in _RESPONSES.items()}


def client_event_id(idempotency_key: str) -> str:
    """A Google event id derived from the caller's idempotency key.

    Google accepts client-supplied ids of base32hex characters (``0-9a-v``), 5-1024 long;
    the same key always gives the same id, so a retried insert gets 409 instead of a
    second event.
    """
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).digest()
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


def parse_datetime(text: str, tz_name: str | None = None) -> dt.datetime:
    """An RFC 3339 timestamp as an aware datetime (offset-less text is read in ``tz_name``)."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone(tz_name) or dt.UTC)
    return value


def format_datetime(value: dt.datetime) -> str:
    """An aware datetime in RFC 3339 with its offset (``Z`` for UTC)."""
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def time_from_wire(value: EventDateTime) -> EventTime:
    """A wire ``EventDateTime`` as a domain :class:`EventTime`."""
    if value.date:
        return EventTime.all_day(dt.date.fromisoformat(value.date))
    if not value.date_time:
        raise ProviderResponseError(
            "an event time has neither date nor dateTime", provider=PROVIDER
        )
    instant = parse_datetime(value.date_time, value.time_zone)
    zone = _zone(value.time_zone)
    if zone is not None:
        return EventTime.zoned(instant.astimezone(zone), value.time_zone)
    return EventTime.zoned(instant, "UTC" if value.time_zone is None else value.time_zone)


def time_to_wire(value: EventTime, *, default_tz: str = "UTC") -> EventDateTime:
    """A domain :class:`EventTime` as a wire ``EventDateTime`` (zoned times keep their tzid)."""
    if value.kind is TimeKind.DATE:
        assert value.date is not None
        return EventDateTime(date=value.date.isoformat())
    assert value.datetime is not None
    if value.kind is TimeKind.FLOATING:
        return EventDateTime(
            date_time=value.datetime.isoformat(timespec="seconds"), time_zone=default_tz
        )
    tzid = value.tzid if _zone(value.tzid) is not None else default_tz
    return EventDateTime(date_time=format_datetime(value.datetime), time_zone=tzid)


def is_tombstone(event: GEvent) -> bool:
    """True for a cancelled event that is a deletion (not a cancelled exception)."""
    return event.status == "cancelled" and not event.recurring_event_id


def _role(
    event: GEvent, start: EventTime, original: EventTime | None, expanded: bool
) -> SeriesRole:
    if event.recurrence:
        return SeriesRole.MASTER
    if not event.recurring_event_id:
        return SeriesRole.SINGLE
    if event.status == "cancelled" or not expanded:
        # unexpanded reads hold only masters, singles and exceptions
        return SeriesRole.EXCEPTION
    if original is not None and original.as_utc() != start.as_utc():
        return SeriesRole.EXCEPTION
    return SeriesRole.INSTANCE


def _stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return parse_datetime(text)
    except ValueError:
        return None


def event_from_wire(
    event: GEvent, calendar_id: str, raw: dict[str, Any], *, expanded: bool = True
) -> Event:
    """A live event or a cancelled exception as a domain :class:`Event`.

    ``expanded`` says whether the read expanded series (``singleEvents=true``): then an
    occurrence is an exception only when cancelled or moved (Google does not flag edited
    instances); otherwise every event with ``recurringEventId`` is an exception.

    A cancelled exception carries only ``originalStartTime``; its start and end are both
    that instant. Tombstones (see :func:`is_tombstone`) are deletions and do not come here.
    """
    if not event.id:
        raise ProviderResponseError("an event without an id", provider=PROVIDER)
    original = time_from_wire(event.original_start_time) if event.original_start_time else None
    if event.start is not None and event.end is not None:
        start, end = time_from_wire(event.start), time_from_wire(event.end)
    elif original is not None:
        start = end = original
    else:
        raise ProviderResponseError(
            f"event {event.id!r} has no start/end and is not a cancelled exception",
            provider=PROVIDER,
        )
    private = event.extended_properties.private if event.extended_properties else None
    organizer = (
        Person(email=event.organizer.email, name=event.organizer.display_name)
        if event.organizer
        else None
    )
    return Event(
        id=event.id,
        calendar_id=calendar_id,
        provider=PROVIDER,
        start=start,
        end=end,
        summary=event.summary,
        description=event.description,
        location=event.location,
        ical_uid=event.i_cal_uid,
        status=EventStatus(event.status) if event.status in _STATUSES else EventStatus.CONFIRMED,
        transparency=(
            Transparency.TRANSPARENT if event.transparency == "transparent" else Transparency.OPAQUE
        ),
        visibility=Visibility(event.visibility) if event.visibility in _VIS else Visibility.DEFAULT,
        organizer=organizer,
        attendees=tuple(_attendee(a) for a in event.attendees or () if a.email),
        recurrence=tuple(event.recurrence or ()),
        series_role=_role(event, start, original, expanded),
        recurring_event_id=event.recurring_event_id,
        original_start=original,
        created=_stamp(event.created),
        updated=_stamp(event.updated),
        etag=event.etag,
        properties=dict(private or {}),
        raw=raw,
    )


_STATUSES = {s.value for s in EventStatus}
_VIS = {v.value for v in Visibility}


def _attendee(a: GAttendee) -> Attendee:
    assert a.email is not None
    return Attendee(
        email=a.email,
        name=a.display_name,
        response=_RESPONSES.get(a.response_status or "", ResponseStatus.UNKNOWN),
        optional=bool(a.optional),
        organizer=bool(a.organizer),
        resource=bool(a.resource),
    )


def event_to_wire(
    draft: EventDraft, *, event_id: str | None = None, default_tz: str = "UTC"
) -> dict[str, Any]:
    """The JSON body of events.insert / events.update for ``draft``.

    A recurring event's ``start`` and ``end`` always carry an IANA ``timeZone``: the
    start's tzid for zoned times, ``default_tz`` for all-day series.
    """
    start = time_to_wire(draft.start, default_tz=default_tz)
    end = time_to_wire(draft.end, default_tz=default_tz)
    if draft.recurrence:
        zone = start.time_zone or default_tz
        start = EventDateTime(date=start.date, date_time=start.date_time, time_zone=zone)
        end = EventDateTime(date=end.date, date_time=end.date_time, time_zone=end.time_zone or zone)
    body = GEvent(
        id=event_id,
        status=draft.status.value,
        summary=draft.summary,
        description=draft.description,
        location=draft.location,
        start=start,
        end=end,
        recurrence=list(draft.recurrence) or None,
        transparency=draft.transparency.value,
        visibility=draft.visibility.value,
        attendees=[
            GAttendee(
                email=a.email,
                display_name=a.name,
                optional=a.optional or None,
                resource=a.resource or None,
                response_status=_RESPONSES_OUT.get(a.response, "needsAction"),
            )
            for a in draft.attendees
        ]
        or None,
        extended_properties=(
            ExtendedProperties(private=dict(draft.properties)) if draft.properties else None
        ),
    )
    return wire_dict(body)


def calendar_from_wire(entry: CalendarListEntry, raw: dict[str, Any]) -> Calendar:
    """A calendarList entry as a domain :class:`Calendar`."""
    return Calendar(
        id=entry.id,
        provider=PROVIDER,
        name=entry.summary_override or entry.summary or entry.id,
        primary=bool(entry.primary),
        read_only=entry.access_role not in ("owner", "writer"),
        time_zone=entry.time_zone,
        raw=raw,
    )
