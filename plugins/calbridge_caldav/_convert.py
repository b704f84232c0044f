"""iCalendar (RFC 5545) resources to calbridge's domain model and back.

One CalDAV resource (``<name>.ics``) holds one event: a single ``VEVENT``, or a series
master (``RRULE``/``RDATE``/``EXDATE``) with its overrides (``VEVENT`` with
``RECURRENCE-ID``), all of one ``UID``, plus the ``VTIMEZONE`` of every ``TZID`` used.

Identities, the same as calbridge's own occurrences (:func:`occurrence_id`):

* a single event or a series master is its resource name (``abc.ics``);
* an occurrence of a series is ``<resource>_<original start>``, the original start as
  ``YYYYMMDD`` (all-day) or ``YYYYMMDDTHHMMSSZ`` (UTC): the id calbridge gives the plain
  occurrences it expands from a master, so an occurrence keeps its id when it is edited.

Change reads give masters (with their recurrence lines, which calbridge expands) and
overrides (``EXCEPTION``; a ``STATUS:CANCELLED`` one hides its occurrence); window reads
expand series here with ``recurring-ical-events``, overrides, ``EXDATE`` and time zones
included. The app's correlation properties travel in ``X-CALBRIDGE-PROPERTIES`` (JSON).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
import recurring_ical_events  # type: ignore[import-untyped]

from calbridge import (
    Attendee,
    Event,
    EventDraft,
    EventStatus,
    EventTime,
    Person,
    ResponseStatus,
    SeriesRole,
    TimeKind,
    TimeRange,
    Transparency,
    Visibility,
)
from calbridge.errors import InvalidRequest, ProviderResponseError

__all__ = [
    "PRODID",
    "Resource",
    "cancel_occurrence",
    "occurrence_id",
    "parse_resource",
    "put_occurrence",
    "resource_from_draft",
    "split_event_id",
    "stamp",
]

PROVIDER = "caldav"
PRODID = "-//calbridge//caldav//EN"
PROPERTIES = "X-CALBRIDGE-PROPERTIES"
_RECURRENCE = ("RRULE", "RDATE", "EXDATE", "EXRULE")
_SUFFIX = re.compile(r"^(\d{8})(T\d{6}Z)?$")
_PARTSTAT = {
    "NEEDS-ACTION": ResponseStatus.NEEDS_ACTION,
    "ACCEPTED": ResponseStatus.ACCEPTED,
    "DECLINED": ResponseStatus.DECLINED,
    "TENTATIVE": ResponseStatus.TENTATIVE,
}
_PARTSTAT_OUT = {v: k for k, v in _PARTSTAT.items()}
_CLASS = {
    "PUBLIC": Visibility.PUBLIC,
    "PRIVATE": Visibility.PRIVATE,
    "CONFIDENTIAL": Visibility.CONFIDENTIAL,
}
_CLASS_OUT = {v: k for k, v in _CLASS.items()}


# --------------------------------------------------------------------------- ids and times


def stamp(t: EventTime) -> str:
    """An original start as an id suffix: ``YYYYMMDD`` or ``YYYYMMDDTHHMMSSZ`` (UTC)."""
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return t.date.strftime("%Y%m%d")
    return t.as_utc().strftime("%Y%m%dT%H%M%SZ")


def occurrence_id(resource: str, original: EventTime) -> str:
    """The id of the occurrence of ``resource``'s series that began at ``original``."""
    return f"{resource}_{stamp(original)}"


def split_event_id(event_id: str) -> tuple[str, str | None]:
    """(resource name, original-start suffix or None) of an event id."""
    head, sep, tail = event_id.rpartition("_")
    if sep and head and _SUFFIX.match(tail):
        return head, tail
    return event_id, None


def _zone_name(tzinfo: dt.tzinfo | None) -> str | None:
    key = getattr(tzinfo, "key", None)
    if isinstance(key, str) and _zone(key) is not None:
        return key
    name = getattr(tzinfo, "zone", None)  # pytz zones of older icalendar releases
    if isinstance(name, str) and _zone(name) is not None:
        return name
    return None


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def time_from_ical(value: Any) -> EventTime:
    """A decoded DTSTART/DTEND/RECURRENCE-ID as an :class:`EventTime`.

    A date is all-day; a naive datetime floating; an aware one zoned in its IANA zone, or
    in ``UTC`` when the zone is a custom ``VTIMEZONE`` with no IANA name.
    """
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return EventTime.floating(value)
        name = _zone_name(value.tzinfo)
        if name is None:
            return EventTime.zoned(value.astimezone(dt.UTC), "UTC")
        return EventTime.zoned(value.astimezone(ZoneInfo(name)), name)
    if isinstance(value, dt.date):
        return EventTime.all_day(value)
    raise ProviderResponseError(f"not a date or date-time: {value!r}", provider=PROVIDER)


def time_to_ical(value: EventTime) -> dt.date | dt.datetime:
    """An :class:`EventTime` as the value icalendar writes (with ``TZID`` when zoned)."""
    if value.kind is TimeKind.DATE:
        assert value.date is not None
        return value.date
    assert value.datetime is not None
    if value.kind is TimeKind.FLOATING:
        return value.datetime
    zone = _zone(value.tzid)
    if zone is None or value.tzid == "UTC":
        return value.datetime.astimezone(dt.UTC)
    return value.datetime.astimezone(zone)


def _decoded(component: icalendar.cal.Component, name: str) -> Any:
    return component.decoded(name) if name in component else None


def _text(component: icalendar.cal.Component, name: str) -> str | None:
    value = component.get(name)
    return None if value is None else str(value)


def _instant(component: icalendar.cal.Component, name: str) -> dt.datetime | None:
    value = _decoded(component, name)
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _start_end(component: icalendar.cal.Component) -> tuple[EventTime, EventTime]:
    if "DTSTART" not in component:
        raise ProviderResponseError("a VEVENT without DTSTART", provider=PROVIDER)
    raw_start = component.decoded("DTSTART")
    start = time_from_ical(raw_start)
    if "DTEND" in component:
        end = time_from_ical(component.decoded("DTEND"))
    elif "DURATION" in component:
        end = time_from_ical(raw_start + component.decoded("DURATION"))
    elif start.kind is TimeKind.DATE:  # RFC 5545 3.6.1: a date lasts the day
        end = time_from_ical(raw_start + dt.timedelta(days=1))
    else:
        end = start
    if start.is_all_day != end.is_all_day:  # a date start with a date-time end: keep the day
        end = EventTime.all_day(_day_after(start))
    if end.as_utc() < start.as_utc():
        end = start
    return start, end


def _day_after(start: EventTime) -> dt.date:
    assert start.date is not None
    return start.date + dt.timedelta(days=1)


# --------------------------------------------------------------------------- reading


def recurrence_lines(component: icalendar.cal.Component) -> tuple[str, ...]:
    """The series' RRULE/RDATE/EXDATE/EXRULE lines as iCalendar content lines."""
    out: list[str] = []
    for name in _RECURRENCE:
        value = component.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            out.append(str(component.content_line(name, item)))
    return tuple(out)


def _person(address: Any) -> tuple[str, str | None]:
    email = str(address)
    if email.lower().startswith("mailto:"):
        email = email[7:]
    params = getattr(address, "params", {})
    name = params.get("CN")
    return email, None if name is None else str(name)


def _attendees(component: icalendar.cal.Component) -> tuple[Attendee, ...]:
    value = component.get("ATTENDEE")
    if value is None:
        return ()
    out: list[Attendee] = []
    for address in value if isinstance(value, list) else [value]:
        email, name = _person(address)
        if not email:
            continue
        params = getattr(address, "params", {})
        out.append(
            Attendee(
                email=email,
                name=name,
                response=_PARTSTAT.get(
                    str(params.get("PARTSTAT", "NEEDS-ACTION")).upper(), ResponseStatus.UNKNOWN
                ),
                optional=str(params.get("ROLE", "")).upper() == "OPT-PARTICIPANT",
                resource=str(params.get("CUTYPE", "")).upper() in ("RESOURCE", "ROOM"),
            )
        )
    return tuple(out)


def _properties(component: icalendar.cal.Component) -> dict[str, str]:
    text = _text(component, PROPERTIES)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def _status(component: icalendar.cal.Component) -> EventStatus:
    value = (_text(component, "STATUS") or "").upper()
    if value == "CANCELLED":
        return EventStatus.CANCELLED
    if value == "TENTATIVE":
        return EventStatus.TENTATIVE
    return EventStatus.CONFIRMED


def event_from_component(
    component: icalendar.cal.Component,
    *,
    resource: str,
    calendar_id: str,
    etag: str | None,
    href: str,
    role: SeriesRole,
    original: EventTime | None = None,
    times: tuple[EventTime, EventTime] | None = None,
) -> Event:
    """One VEVENT (or one expanded occurrence of it) as a domain :class:`Event`."""
    start, end = times or _start_end(component)
    in_series = role in (SeriesRole.INSTANCE, SeriesRole.EXCEPTION)
    organizer = None
    if "ORGANIZER" in component:
        email, name = _person(component["ORGANIZER"])
        organizer = Person(email=email or None, name=name)
    return Event(
        id=occurrence_id(resource, original or start) if in_series else resource,
        calendar_id=calendar_id,
        provider=PROVIDER,
        start=start,
        end=end,
        summary=_text(component, "SUMMARY"),
        description=_text(component, "DESCRIPTION"),
        location=_text(component, "LOCATION"),
        ical_uid=_text(component, "UID"),
        status=_status(component),
        transparency=(
            Transparency.TRANSPARENT
            if (_text(component, "TRANSP") or "").upper() == "TRANSPARENT"
            else Transparency.OPAQUE
        ),
        visibility=_CLASS.get((_text(component, "CLASS") or "").upper(), Visibility.DEFAULT),
        organizer=organizer,
        attendees=_attendees(component),
        recurrence=recurrence_lines(component) if role is SeriesRole.MASTER else (),
        series_role=role,
        recurring_event_id=resource if in_series else None,
        original_start=original if in_series else None,
        created=_instant(component, "CREATED"),
        updated=_instant(component, "LAST-MODIFIED") or _instant(component, "DTSTAMP"),
        etag=etag,
        properties=_properties(component),
        raw={"href": href, "ics": component.to_ical().decode("utf-8")},
    )


class Resource:
    """One parsed calendar resource: its href, ETag and VCALENDAR."""

    def __init__(self, href: str, etag: str | None, calendar: icalendar.Calendar) -> None:
        self.href = href
        self.etag = etag
        self.calendar = calendar
        self.name = href.rstrip("/").rsplit("/", 1)[-1]

    def vevents(self) -> list[icalendar.cal.Component]:
        """The resource's VEVENTs (master first when there is one)."""
        found = [c for c in self.calendar.subcomponents if c.name == "VEVENT"]
        return sorted(found, key=lambda c: "RECURRENCE-ID" in c)

    def master(self) -> icalendar.cal.Component | None:
        """The VEVENT without RECURRENCE-ID (the single event or the series master)."""
        return next((c for c in self.vevents() if "RECURRENCE-ID" not in c), None)

    def override_starts(self) -> set[str]:
        """The original starts (:func:`stamp`) of the overrides."""
        return {
            stamp(time_from_ical(c.decoded("RECURRENCE-ID")))
            for c in self.vevents()
            if "RECURRENCE-ID" in c
        }

    def stored(self, calendar_id: str) -> list[Event]:
        """The events as stored: the master or single event, then each override."""
        out: list[Event] = []
        for component in self.vevents():
            original = None
            if "RECURRENCE-ID" in component:
                role = SeriesRole.EXCEPTION
                original = time_from_ical(component.decoded("RECURRENCE-ID"))
            elif "RRULE" in component or "RDATE" in component:
                role = SeriesRole.MASTER
            else:
                role = SeriesRole.SINGLE
            out.append(
                event_from_component(
                    component,
                    resource=self.name,
                    calendar_id=calendar_id,
                    etag=self.etag,
                    href=self.href,
                    role=role,
                    original=original,
                )
            )
        return out

    def expanded(self, calendar_id: str, window: TimeRange) -> list[Event]:
        """The events overlapping ``window``: series expanded, cancelled occurrences left out."""
        master = self.master()
        if master is None or not ("RRULE" in master or "RDATE" in master):
            return [
                e
                for e in self.stored(calendar_id)
                if e.status is not EventStatus.CANCELLED and _overlaps(e, window)
            ]
        overrides = self.override_starts()
        out: list[Event] = []
        query = recurring_ical_events.of(self.calendar, skip_bad_series=True)
        for component in query.between(window.start, window.end):
            if "RECURRENCE-ID" not in component:
                continue
            original = time_from_ical(component.decoded("RECURRENCE-ID"))
            role = SeriesRole.EXCEPTION if stamp(original) in overrides else SeriesRole.INSTANCE
            event = event_from_component(
                component,
                resource=self.name,
                calendar_id=calendar_id,
                etag=self.etag,
                href=self.href,
                role=role,
                original=original,
            )
            if event.status is not EventStatus.CANCELLED and _overlaps(event, window):
                out.append(event)
        return out


def _overlaps(event: Event, window: TimeRange) -> bool:
    start, end = event.start.as_utc(), event.end.as_utc()
    return window.overlaps(start, max(end, start + dt.timedelta(seconds=1)))


def parse_resource(href: str, etag: str | None, text: str) -> Resource:
    """A resource's calendar-data, parsed."""
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except ValueError as exc:
        raise ProviderResponseError(
            f"{href}: not an iCalendar object ({exc})", provider=PROVIDER
        ) from None
    if not isinstance(calendar, icalendar.Calendar):
        raise ProviderResponseError(f"{href}: not a VCALENDAR", provider=PROVIDER)
    return Resource(href, etag, calendar)


# --------------------------------------------------------------------------- writing


def _fill(component: icalendar.Event, draft: EventDraft, *, uid: str, sequence: int) -> None:
    component.add("uid", uid)
    component.add("dtstamp", dt.datetime.now(dt.UTC).replace(microsecond=0))
    component.add("sequence", sequence)
    component.add("dtstart", time_to_ical(draft.start))
    component.add("dtend", time_to_ical(draft.end))
    for name, value in (
        ("summary", draft.summary),
        ("description", draft.description),
        ("location", draft.location),
    ):
        if value is not None:
            component.add(name, value)
    component.add("status", draft.status.value.upper())
    component.add("transp", draft.transparency.value.upper())
    if draft.visibility in _CLASS_OUT:
        component.add("class", _CLASS_OUT[draft.visibility])
    for attendee in draft.attendees:
        params = {"PARTSTAT": _PARTSTAT_OUT.get(attendee.response, "NEEDS-ACTION")}
        if attendee.name:
            params["CN"] = attendee.name
        params["ROLE"] = "OPT-PARTICIPANT" if attendee.optional else "REQ-PARTICIPANT"
        if attendee.resource:
            params["CUTYPE"] = "RESOURCE"
        component.add("attendee", f"mailto:{attendee.email}", parameters=params)
    if draft.properties:
        component.add(PROPERTIES, json.dumps(dict(draft.properties), sort_keys=True))


def _with_recurrence(component: icalendar.Event, lines: Iterable[str]) -> None:
    lines = list(lines)
    if not lines:
        return
    text = "BEGIN:VEVENT\r\n" + "\r\n".join(lines) + "\r\nEND:VEVENT\r\n"
    try:
        parsed = icalendar.Event.from_ical(text)
    except ValueError as exc:
        raise InvalidRequest(f"recurrence lines: {exc}", provider=PROVIDER) from None
    for name in _RECURRENCE:
        value = parsed.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            component.add(name, item)


def _calendar(components: Iterable[icalendar.cal.Component]) -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    for component in components:
        calendar.add_component(component)
    calendar.add_missing_timezones()
    return calendar


def _sequence(component: icalendar.cal.Component | None) -> int:
    if component is None or "SEQUENCE" not in component:
        return 0
    try:
        return int(component.decoded("SEQUENCE")) + 1
    except (TypeError, ValueError):
        return 1


def resource_from_draft(
    draft: EventDraft, *, uid: str, existing: Resource | None = None
) -> icalendar.Calendar:
    """The VCALENDAR of ``draft`` as a single event or series master.

    Replacing an existing series keeps its overrides whose occurrence the new rule still
    has, and the ``SEQUENCE`` grows.
    """
    master = icalendar.Event()
    _fill(master, draft, uid=uid, sequence=_sequence(existing.master() if existing else None))
    _with_recurrence(master, draft.recurrence)
    kept: list[icalendar.cal.Component] = []
    if existing is not None and draft.recurrence:
        kept = [c for c in existing.vevents() if "RECURRENCE-ID" in c]
    return _calendar([master, *kept])


def _master_or_fail(resource: Resource) -> icalendar.cal.Component:
    master = resource.master()
    if master is None or not ("RRULE" in master or "RDATE" in master):
        raise InvalidRequest(
            f"{resource.name} is not a recurring series; address the event itself",
            provider=PROVIDER,
        )
    return master


def _original_value(master: icalendar.cal.Component, suffix: str) -> dt.date | dt.datetime:
    """The RECURRENCE-ID value of the occurrence ``suffix`` in the master's own form."""
    start = master.decoded("DTSTART")
    if len(suffix) == 8:
        return dt.datetime.strptime(suffix, "%Y%m%d").date()
    instant = dt.datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    if isinstance(start, dt.datetime) and start.tzinfo is not None:
        return instant.astimezone(start.tzinfo)
    if isinstance(start, dt.datetime):
        return instant.replace(tzinfo=None)
    return instant


def _same_original(component: icalendar.cal.Component, suffix: str) -> bool:
    return (
        "RECURRENCE-ID" in component
        and stamp(time_from_ical(component.decoded("RECURRENCE-ID"))) == suffix
    )


def put_occurrence(resource: Resource, suffix: str, draft: EventDraft) -> icalendar.Calendar:
    """The resource with the occurrence ``suffix`` overridden by ``draft`` (RECURRENCE-ID)."""
    master = _master_or_fail(resource)
    previous = next((c for c in resource.vevents() if _same_original(c, suffix)), None)
    override = icalendar.Event()
    _fill(override, draft, uid=str(master["UID"]), sequence=_sequence(previous or master))
    override.add("recurrence-id", _original_value(master, suffix))
    others = [c for c in resource.vevents() if c is not previous]
    return _calendar([*others, override])


def cancel_occurrence(resource: Resource, suffix: str) -> icalendar.Calendar:
    """The resource with the occurrence ``suffix`` excluded (EXDATE), its override dropped."""
    master = _master_or_fail(resource)
    master.add("exdate", [_original_value(master, suffix)])
    others = [c for c in resource.vevents() if not _same_original(c, suffix)]
    return _calendar(others)


def window_filter(start: dt.datetime, end: dt.datetime) -> str:
    """A calendar-query filter: VEVENTs with an occurrence in ``[start, end)``."""
    fmt = "%Y%m%dT%H%M%SZ"
    return (
        '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">'
        f'<c:time-range start="{start.astimezone(dt.UTC).strftime(fmt)}" '
        f'end="{end.astimezone(dt.UTC).strftime(fmt)}"/>'
        "</c:comp-filter></c:comp-filter></c:filter>"
    )


def free_busy_periods(text: str) -> list[tuple[dt.datetime, dt.datetime, str]]:
    """(start, end, FBTYPE) of each FREEBUSY period of a VFREEBUSY answer."""
    calendar = icalendar.Calendar.from_ical(text)
    out: list[tuple[dt.datetime, dt.datetime, str]] = []
    for component in calendar.walk("VFREEBUSY"):
        value = component.get("FREEBUSY")
        for prop in value if isinstance(value, list) else ([value] if value is not None else []):
            kind = str(prop.params.get("FBTYPE", "BUSY")).upper()
            for text_period in prop.to_ical().decode().split(","):
                out.append((*_period(text_period), kind))
    return out


def _period(text: str) -> tuple[dt.datetime, dt.datetime]:
    first, second = text.split("/", 1)
    start = icalendar.vDatetime.from_ical(first)  # type: ignore[no-untyped-call]
    if second.startswith(("P", "-P", "+P")):
        span = icalendar.vDuration.from_ical(second)  # type: ignore[no-untyped-call]
        return _utc(start), _utc(start + span)
    end = icalendar.vDatetime.from_ical(second)  # type: ignore[no-untyped-call]
    return _utc(start), _utc(end)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
