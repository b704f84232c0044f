"""Conversion between Graph's event JSON and calbridge's domain model.

Rules (Microsoft Graph v1.0):

* The provider asks for every time in UTC (``Prefer: outlook.timezone="UTC"``) and shows
  it in the event's ``originalStartTimeZone`` (a Windows name mapped to IANA).
* All-day events (``isAllDay``) are midnight to midnight in *whatever* zone was asked
  for, never shifted: the date is read off the wall-clock text, not converted.
* ``showAs``: ``free`` is transparent, ``tentative`` a tentative status, everything else
  (``busy``, ``oof``, ``workingElsewhere``, ``unknown``) opaque. ``isCancelled`` is a
  cancelled status. ``sensitivity`` ``private``/``personal`` read as private,
  ``confidential`` as confidential.
* ``type``: ``seriesMaster`` (carries the recurrence as an RRULE), ``occurrence`` and
  ``exception`` (with ``seriesMasterId``), ``singleInstance``.
* The app's correlation properties are ``singleValueExtendedProperties`` named
  ``String {PROPERTY_SET} Name <key>`` (returned only with ``$expand``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

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
from calbridge.errors import InvalidRequest, ProviderResponseError
from calbridge.toolkit import wire_dict

from ._recurrence import UnsupportedRecurrence, pattern_from_rrule, rrule_from_pattern
from ._tz import format_graph_datetime, parse_graph_datetime, to_iana, to_windows, zone
from ._wire import (
    GraphAttendee,
    GraphBody,
    GraphDateTime,
    GraphEmail,
    GraphEvent,
    GraphExtendedProperty,
    GraphLocation,
    GraphResponse,
    event_struct,
)

__all__ = [
    "PROPERTY_SET",
    "calendar_from_wire",
    "event_from_wire",
    "event_to_wire",
    "property_expand",
    "time_from_wire",
    "time_to_wire",
    "transaction_id",
]

PROVIDER = "outlook"
#: the MAPI property set calbridge's extended properties live in (a fixed, random GUID)
PROPERTY_SET = "{6f1c2a4e-8a53-4d8e-9c1b-3ad0c0b1e2f7}"
_PROP_PREFIX = f"String {PROPERTY_SET} Name "

_RESPONSES = {
    "none": ResponseStatus.NEEDS_ACTION,
    "notResponded": ResponseStatus.NEEDS_ACTION,
    "accepted": ResponseStatus.ACCEPTED,
    "organizer": ResponseStatus.ACCEPTED,
    "declined": ResponseStatus.DECLINED,
    "tentativelyAccepted": ResponseStatus.TENTATIVE,
}
_RESPONSES_OUT = {
    ResponseStatus.NEEDS_ACTION: "none",
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "tentativelyAccepted",
    ResponseStatus.UNKNOWN: "none",
}
_ROLES = {
    "seriesMaster": SeriesRole.MASTER,
    "occurrence": SeriesRole.INSTANCE,
    "exception": SeriesRole.EXCEPTION,
}


def transaction_id(idempotency_key: str) -> str:
    """The Graph ``transactionId`` for a caller's idempotency key (stable, opaque)."""
    return "cb-" + hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]


def property_expand() -> str:
    """The ``$expand`` value that returns calbridge's extended properties."""
    return f"singleValueExtendedProperties($filter=startswith(id,'String {PROPERTY_SET}'))"


def calendar_from_wire(data: dict[str, Any]) -> Calendar:
    """A ``calendar`` resource as a domain :class:`Calendar`."""
    try:
        return Calendar(
            id=str(data["id"]),
            provider=PROVIDER,
            name=str(data.get("name") or ""),
            primary=bool(data.get("isDefaultCalendar")),
            read_only=not data.get("canEdit", True),
            raw=dict(data),
        )
    except KeyError:
        raise ProviderResponseError("a calendar has no id", provider=PROVIDER) from None


def time_from_wire(value: GraphDateTime, *, all_day: bool, display_tz: str) -> EventTime:
    """A ``dateTimeTimeZone`` as an :class:`EventTime` shown in ``display_tz`` (IANA)."""
    if all_day:
        return EventTime.all_day(dt.date.fromisoformat(value.date_time[:10]))
    instant = parse_graph_datetime(value.date_time, value.time_zone)
    return EventTime.zoned(instant.astimezone(zone(display_tz)), display_tz)


def time_to_wire(value: EventTime, *, default_tz: str) -> GraphDateTime:
    """An :class:`EventTime` as a ``dateTimeTimeZone`` (Windows zone name, 7 digits)."""
    if value.kind is TimeKind.DATE:
        assert value.date is not None
        midnight = dt.datetime.combine(value.date, dt.time())
        return GraphDateTime(
            date_time=format_graph_datetime(midnight), time_zone=to_windows(default_tz)
        )
    assert value.datetime is not None
    if value.kind is TimeKind.FLOATING:
        windows = to_windows(default_tz)
        return GraphDateTime(date_time=format_graph_datetime(value.datetime), time_zone=windows)
    windows = to_windows(value.tzid)
    local = value.datetime.astimezone(zone(windows))
    return GraphDateTime(date_time=format_graph_datetime(local), time_zone=windows)


def _attendee(a: GraphAttendee) -> Attendee | None:
    email = a.email_address.address if a.email_address else None
    if not email:
        return None
    response = ResponseStatus.NEEDS_ACTION
    if a.status is not None:
        response = _RESPONSES.get(a.status.response or "none", ResponseStatus.UNKNOWN)
    return Attendee(
        email=email,
        name=a.email_address.name if a.email_address else None,
        response=response,
        optional=a.type == "optional",
        resource=a.type == "resource",
        organizer=bool(a.status and a.status.response == "organizer"),
    )


def _stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return parse_graph_datetime(text, "UTC")
    except ValueError:
        return None


def _properties(props: list[GraphExtendedProperty] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for prop in props or ():
        if prop.id.lower().startswith(_PROP_PREFIX.lower()) and prop.value is not None:
            out[prop.id[len(_PROP_PREFIX) :]] = prop.value
    return out


def event_from_wire(data: dict[str, Any], calendar_id: str) -> Event:
    """A Graph ``event`` (asked for in UTC) as a domain :class:`Event`."""
    w = event_struct(data)
    event_id = w.id
    assert event_id is not None  # event_struct refuses an event without one
    if w.start is None or w.end is None:
        raise ProviderResponseError(f"event {w.id!r} has no start or end", provider=PROVIDER)
    display = to_iana(w.original_start_time_zone)
    all_day = bool(w.is_all_day)
    start = time_from_wire(w.start, all_day=all_day, display_tz=display)
    end = time_from_wire(w.end, all_day=all_day, display_tz=display)
    role = _ROLES.get(w.type or "", SeriesRole.SINGLE)
    if role in (SeriesRole.INSTANCE, SeriesRole.EXCEPTION) and not w.series_master_id:
        role = SeriesRole.SINGLE
    recurrence: tuple[str, ...] = ()
    if w.recurrence and role is SeriesRole.MASTER:
        tz_name = (w.recurrence.get("range") or {}).get("recurrenceTimeZone") or display
        anchor = start.as_utc().astimezone(zone(tz_name))
        try:
            recurrence = (
                rrule_from_pattern(
                    w.recurrence,
                    all_day=all_day,
                    tz=zone(tz_name),
                    start_time=anchor.timetz().replace(tzinfo=None),
                ),
            )
        except (UnsupportedRecurrence, ValueError):
            recurrence = ()  # kept in raw; the occurrences still come through calendarView
    original: EventTime | None = None
    if w.original_start and role is not SeriesRole.SINGLE:
        instant = parse_graph_datetime(w.original_start, "UTC").astimezone(zone(display))
        original = (
            EventTime.all_day(instant.date()) if all_day else EventTime.zoned(instant, display)
        )
    show_as = (w.show_as or "busy").lower()
    status = EventStatus.CONFIRMED
    if w.is_cancelled:
        status = EventStatus.CANCELLED
    elif show_as == "tentative":
        status = EventStatus.TENTATIVE
    sensitivity = (w.sensitivity or "normal").lower()
    visibility = {
        "private": Visibility.PRIVATE,
        "personal": Visibility.PRIVATE,
        "confidential": Visibility.CONFIDENTIAL,
    }.get(sensitivity, Visibility.DEFAULT)
    organizer = None
    if w.organizer and w.organizer.email_address:
        organizer = Person(
            email=w.organizer.email_address.address, name=w.organizer.email_address.name
        )
    return Event(
        id=event_id,
        calendar_id=calendar_id,
        provider=PROVIDER,
        start=start,
        end=end,
        summary=w.subject,
        description=w.body.content if w.body else None,
        location=(w.location.display_name or None) if w.location else None,
        ical_uid=w.ical_uid,
        status=status,
        transparency=Transparency.TRANSPARENT if show_as == "free" else Transparency.OPAQUE,
        visibility=visibility,
        organizer=organizer,
        attendees=tuple(a for a in map(_attendee, w.attendees or ()) if a is not None),
        recurrence=recurrence,
        series_role=role,
        recurring_event_id=w.series_master_id if role is not SeriesRole.SINGLE else None,
        original_start=original,
        created=_stamp(w.created_date_time),
        updated=_stamp(w.last_modified_date_time),
        etag=w.change_key,
        properties=_properties(w.single_value_extended_properties),
        raw=dict(data),
    )


def event_to_wire(
    draft: EventDraft, *, default_tz: str, transaction: str | None = None
) -> dict[str, Any]:
    """The Graph ``event`` body for a draft (every writable field, for create or PATCH).

    A draft without recurrence leaves an existing series recurring; end a series by
    deleting it.
    """
    # no ``recurrence: null`` for a draft without one: Graph refuses recurrence on an
    # occurrence or exception, and the provider cannot tell those apart without a read
    recurrence: dict[str, Any] | None = None
    if draft.recurrence:
        tzid = draft.start.tzid if draft.start.kind is TimeKind.ZONED else default_tz
        windows = to_windows(tzid)
        first = draft.start.as_utc().astimezone(zone(windows))
        start_date = draft.start.date if draft.start.date is not None else first.date()
        try:
            pattern, exdates = pattern_from_rrule(
                draft.recurrence, start=start_date, tz_name=windows, tz=zone(windows)
            )
        except UnsupportedRecurrence as exc:
            raise InvalidRequest(str(exc), provider=PROVIDER) from None
        if exdates:
            raise InvalidRequest(
                "Graph cannot create a series with EXDATE; create it, then delete those "
                "occurrences",
                provider=PROVIDER,
            )
        recurrence = pattern
    body = GraphEvent(
        subject=draft.summary or "",
        body=GraphBody(content_type="text", content=draft.description or ""),
        start=time_to_wire(draft.start, default_tz=default_tz),
        end=time_to_wire(draft.end, default_tz=default_tz),
        is_all_day=draft.start.is_all_day,
        location=GraphLocation(display_name=draft.location or ""),
        show_as="free"
        if draft.transparency is Transparency.TRANSPARENT
        else ("tentative" if draft.status is EventStatus.TENTATIVE else "busy"),
        sensitivity={
            Visibility.PRIVATE: "private",
            Visibility.CONFIDENTIAL: "confidential",
        }.get(draft.visibility, "normal"),
        # every attendee, an empty list included: a PATCH replaces the list
        attendees=[
            GraphAttendee(
                email_address=GraphEmail(address=a.email, name=a.name or a.email),
                type="resource" if a.resource else ("optional" if a.optional else "required"),
                status=GraphResponse(response=_RESPONSES_OUT[a.response]),
            )
            for a in draft.attendees
        ],
        recurrence=recurrence,
        single_value_extended_properties=[
            GraphExtendedProperty(id=_PROP_PREFIX + key, value=value)
            for key, value in draft.properties.items()
        ]
        or None,
        transaction_id=transaction or None,
    )
    return wire_dict(body)
