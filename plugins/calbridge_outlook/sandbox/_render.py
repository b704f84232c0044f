"""Native world events rendered as Graph JSON, and Graph JSON bodies read back.

* Times go out in the ``Prefer: outlook.timezone`` zone (UTC without it) as a wall clock
  with seven fractional digits; all-day events stay midnight to midnight, whatever zone.
* ``changeKey`` (and ``@odata.etag`` ``W/"<changeKey>"``) is derived from the native
  version, so it changes on every write; plain occurrences carry their master's.
* Series: masters carry a ``patternedRecurrence`` made from their RRULE; occurrences get
  the id ``<masterId>_<YYYYMMDDTHHMMSSZ>`` (``_<YYYYMMDD>`` all-day), exceptions their
  own native id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from calbridge import (
    Attendee,
    EventStatus,
    EventTime,
    ResponseStatus,
    TimeKind,
    Transparency,
    Visibility,
)
from calbridge.sandbox import NativeCalendar, NativeEvent, Occurrence, User

from .._recurrence import UnsupportedRecurrence, pattern_from_rrule, rrule_from_pattern
from .._tz import format_graph_datetime, parse_graph_datetime, to_iana, to_windows, zone
from ._state import Overlay

__all__ = [
    "BadBody",
    "calendar_json",
    "change_key",
    "event_json",
    "fields_from_body",
    "stamp",
]

_RESPONSE_OUT = {
    ResponseStatus.NEEDS_ACTION: "none",
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "tentativelyAccepted",
    ResponseStatus.UNKNOWN: "none",
}
_RESPONSE_IN = {
    "none": ResponseStatus.NEEDS_ACTION,
    "notResponded": ResponseStatus.NEEDS_ACTION,
    "organizer": ResponseStatus.ACCEPTED,
    "accepted": ResponseStatus.ACCEPTED,
    "declined": ResponseStatus.DECLINED,
    "tentativelyAccepted": ResponseStatus.TENTATIVE,
}
_SHOW_AS = frozenset({"free", "tentative", "busy", "oof", "workingElsewhere", "unknown"})
_SENSITIVITY = {
    "normal": Visibility.DEFAULT,
    "personal": Visibility.PRIVATE,
    "private": Visibility.PRIVATE,
    "confidential": Visibility.CONFIDENTIAL,
}


class BadBody(ValueError):
    """A request body Graph would refuse with 400."""


def stamp(when: dt.datetime) -> str:
    """A UTC timestamp as Graph writes ``lastModifiedDateTime`` (7 digits, ``Z``)."""
    return format_graph_datetime(when.astimezone(dt.UTC).replace(tzinfo=None)) + "Z"


def change_key(event: NativeEvent) -> str:
    """A changeKey that changes on every native write."""
    digest = hashlib.sha256(f"{event.id}:{event.version}".encode()).digest()[:12]
    return "DwAAABYAAA" + base64.b64encode(digest).decode("ascii")


def calendar_json(cal: NativeCalendar, owner: User) -> dict[str, Any]:
    """A ``calendar`` resource."""
    digest = hashlib.sha256(f"{cal.id}:{cal.name}".encode()).digest()[:9]
    return {
        "id": cal.id,
        "name": cal.name,
        "color": "auto",
        "hexColor": "",
        "isDefaultCalendar": cal.primary,
        "changeKey": base64.b64encode(digest).decode("ascii"),
        "canShare": not cal.read_only,
        "canViewPrivateItems": True,
        "canEdit": not cal.read_only,
        "isRemovable": not cal.primary,
        "isTallyingResponses": True,
        "allowedOnlineMeetingProviders": ["teamsForBusiness"],
        "defaultOnlineMeetingProvider": "teamsForBusiness",
        "owner": {"name": owner.name, "address": owner.email},
    }


def _instant(t: EventTime, user_tz: str) -> dt.datetime:
    if t.kind is TimeKind.FLOATING:
        assert t.datetime is not None
        return t.datetime.replace(tzinfo=zone(user_tz))
    return t.as_utc(zone(user_tz))


def _time(t: EventTime, prefer: str, user_tz: str) -> dict[str, str]:
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        midnight = dt.datetime.combine(t.date, dt.time())
        return {"dateTime": format_graph_datetime(midnight), "timeZone": prefer}
    local = _instant(t, user_tz).astimezone(zone(prefer))
    return {"dateTime": format_graph_datetime(local), "timeZone": prefer}


def _zone_name(t: EventTime, user_tz: str) -> str:
    return to_windows(t.tzid if t.kind is TimeKind.ZONED else user_tz)


def _show_as(event: NativeEvent, overlay: Overlay | None) -> str:
    if event.transparency is Transparency.TRANSPARENT:
        return "free"
    if event.status is EventStatus.TENTATIVE:
        return "tentative"
    if overlay and overlay.show_as in ("oof", "workingElsewhere", "unknown"):
        return overlay.show_as
    return "busy"


def _sensitivity(event: NativeEvent, overlay: Overlay | None) -> str:
    if event.visibility is Visibility.CONFIDENTIAL:
        return "confidential"
    if event.visibility is Visibility.PRIVATE:
        return "personal" if overlay and overlay.sensitivity == "personal" else "private"
    return "normal"


def event_json(
    *,
    event: NativeEvent,
    user: User,
    prefer: str,
    overlay: Overlay | None,
    occurrence: Occurrence | None = None,
    master: NativeEvent | None = None,
    expand_properties: bool = False,
) -> dict[str, Any]:
    """One Graph ``event``. ``occurrence`` renders a plain occurrence or an exception."""
    start, end = event.start, event.end
    kind = "seriesMaster" if event.is_master else "singleInstance"
    event_id = event.id
    series_master: str | None = None
    original: EventTime | None = None
    if occurrence is not None and occurrence.original_start is not None:
        start, end = occurrence.start, occurrence.end
        original = occurrence.original_start
        event_id = occurrence.instance_id
        if occurrence.event.is_exception:
            kind = "exception"
            series_master = occurrence.event.recurring_event_id
        else:
            kind = "occurrence"
            series_master = occurrence.event.id
    elif event.is_exception:
        kind = "exception"
        series_master = event.recurring_event_id
        original = event.original_start
    all_day = start.kind is TimeKind.DATE
    organizer = event.organizer
    body: dict[str, Any] = {
        "@odata.etag": f'W/"{change_key(event)}"',
        "id": event_id,
        "createdDateTime": stamp(event.created),
        "lastModifiedDateTime": stamp(event.updated),
        "changeKey": change_key(event),
        "categories": [],
        "transactionId": None,
        "originalStartTimeZone": _zone_name(event.start, user.time_zone),
        "originalEndTimeZone": _zone_name(event.end, user.time_zone),
        "iCalUId": event.ical_uid,
        "uid": event.ical_uid,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": True,
        "hasAttachments": False,
        "subject": event.summary or "",
        "bodyPreview": (event.description or "")[:255],
        "importance": "normal",
        "sensitivity": _sensitivity(event, overlay),
        "isAllDay": all_day,
        "isCancelled": event.status is EventStatus.CANCELLED,
        "isOrganizer": bool(organizer and organizer.email == user.email),
        "responseRequested": True,
        "seriesMasterId": series_master,
        "showAs": _show_as(event, overlay),
        "type": kind,
        "webLink": f"https://outlook.office365.com/owa/?itemid={event_id}&exvsurl=1",
        "isOnlineMeeting": False,
        "onlineMeeting": None,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": {"contentType": "text", "content": event.description or ""},
        "start": _time(start, prefer, user.time_zone),
        "end": _time(end, prefer, user.time_zone),
        "location": {"displayName": event.location or "", "locationType": "default"},
        "locations": [{"displayName": event.location}] if event.location else [],
        "recurrence": None,
        "attendees": [_attendee_json(a) for a in event.attendees],
        "organizer": {
            "emailAddress": {
                "name": organizer.name if organizer else None,
                "address": organizer.email if organizer else None,
            }
        },
    }
    if original is not None:
        body["originalStart"] = stamp(_instant(original, user.time_zone))
    if kind == "seriesMaster":
        body["recurrence"] = _recurrence_json(event, user.time_zone)
    if expand_properties and event.private_properties:
        body["singleValueExtendedProperties"] = [
            {"id": k, "value": v} for k, v in event.private_properties.items()
        ]
    return body


def _attendee_json(a: Attendee) -> dict[str, Any]:
    kind = "resource" if a.resource else ("optional" if a.optional else "required")
    return {
        "type": kind,
        "status": {"response": _RESPONSE_OUT[a.response], "time": "0001-01-01T00:00:00Z"},
        "emailAddress": {"name": a.name or a.email, "address": a.email},
    }


def _recurrence_json(event: NativeEvent, user_tz: str) -> dict[str, Any] | None:
    windows = _zone_name(event.start, user_tz)
    first = _instant(event.start, user_tz).astimezone(zone(windows))
    start_date = event.start.date or first.date()
    try:
        pattern, _ = pattern_from_rrule(
            event.recurrence, start=start_date, tz_name=windows, tz=zone(windows)
        )
    except UnsupportedRecurrence:
        return None
    pattern["pattern"].setdefault("month", 0)
    pattern["pattern"].setdefault("dayOfMonth", 0)
    pattern["pattern"].setdefault("firstDayOfWeek", "sunday")
    pattern["pattern"].setdefault("index", "first")
    pattern["pattern"].setdefault("daysOfWeek", [])
    pattern["range"].setdefault("endDate", "0001-01-01")
    pattern["range"].setdefault("numberOfOccurrences", 0)
    return pattern


def _read_time(value: Any, *, all_day: bool, name: str) -> EventTime:
    if not isinstance(value, dict) or not value.get("dateTime"):
        raise BadBody(f"{name} needs a dateTime and a timeZone")
    tz_name = str(value.get("timeZone") or "UTC")
    try:
        when = parse_graph_datetime(str(value["dateTime"]), tz_name)
    except ValueError:
        raise BadBody(f"{name}.dateTime is not a date-time") from None
    if all_day:
        local = parse_graph_datetime(str(value["dateTime"]), "UTC")
        if local.time() != dt.time():
            raise BadBody("an all-day event starts and ends at midnight")
        return EventTime.all_day(local.date())
    iana = to_iana(tz_name)
    return EventTime.zoned(when.astimezone(zone(iana)), iana)


def fields_from_body(
    body: dict[str, Any], *, current: NativeEvent | None = None
) -> tuple[dict[str, Any], Overlay]:
    """World fields (for insert or update) and Graph overlays from a POST/PATCH body."""
    out: dict[str, Any] = {}
    overlay = Overlay()
    if "subject" in body:
        out["summary"] = body["subject"] or None
    if isinstance(body.get("body"), dict):
        out["description"] = body["body"].get("content") or None
    if "location" in body:
        loc = body["location"] if isinstance(body["location"], dict) else {}
        out["location"] = loc.get("displayName") or None
    all_day = bool(body.get("isAllDay", current.start.is_all_day if current is not None else False))
    for name in ("start", "end"):
        if name in body:
            out[name] = _read_time(body[name], all_day=all_day, name=name)
        elif current is not None and "isAllDay" in body and all_day != current.start.is_all_day:
            raise BadBody("changing isAllDay needs start and end too")
    if "showAs" in body:
        show_as = str(body["showAs"])
        if show_as not in _SHOW_AS:
            raise BadBody(f"showAs {show_as!r} is not a freeBusyStatus")
        overlay.show_as = show_as
        out["transparency"] = Transparency.TRANSPARENT if show_as == "free" else Transparency.OPAQUE
        out["status"] = EventStatus.TENTATIVE if show_as == "tentative" else EventStatus.CONFIRMED
    if "sensitivity" in body:
        sensitivity = str(body["sensitivity"])
        if sensitivity not in _SENSITIVITY:
            raise BadBody(f"sensitivity {sensitivity!r} is not a sensitivity")
        overlay.sensitivity = sensitivity
        out["visibility"] = _SENSITIVITY[sensitivity]
    if "attendees" in body:
        out["attendees"] = tuple(_attendee_in(a) for a in body["attendees"] or [])
    if "recurrence" in body:
        out["recurrence"] = _recurrence_in(body, out, current)
    props = body.get("singleValueExtendedProperties")
    if isinstance(props, list):
        merged = dict(current.private_properties) if current is not None else {}
        for prop in props:
            if isinstance(prop, dict) and isinstance(prop.get("id"), str):
                merged[prop["id"]] = str(prop.get("value", ""))
        out["private_properties"] = merged
    return out, overlay


def _attendee_in(a: Any) -> Attendee:
    if not isinstance(a, dict) or not isinstance(a.get("emailAddress"), dict):
        raise BadBody("an attendee needs emailAddress")
    email = a["emailAddress"].get("address")
    if not email:
        raise BadBody("an attendee needs emailAddress.address")
    given = a.get("status")
    status: dict[str, Any] = given if isinstance(given, dict) else {}
    return Attendee(
        email=str(email),
        name=a["emailAddress"].get("name"),
        response=_RESPONSE_IN.get(str(status.get("response") or "none"), ResponseStatus.UNKNOWN),
        optional=a.get("type") == "optional",
        resource=a.get("type") == "resource",
    )


def _recurrence_in(
    body: dict[str, Any], out: dict[str, Any], current: NativeEvent | None
) -> tuple[str, ...]:
    rec = body["recurrence"]
    if rec is None:
        return ()
    if not isinstance(rec, dict):
        raise BadBody("recurrence must be a patternedRecurrence")
    start: EventTime | None = out.get("start") or (current.start if current else None)
    if start is None:
        raise BadBody("a recurring event needs a start")
    tz_name = (rec.get("range") or {}).get("recurrenceTimeZone") or (
        start.tzid if start.kind is TimeKind.ZONED else "UTC"
    )
    anchor = start.as_utc().astimezone(zone(tz_name))
    try:
        return (
            rrule_from_pattern(
                rec,
                all_day=start.is_all_day,
                tz=zone(tz_name),
                start_time=anchor.time() if not start.is_all_day else dt.time(),
            ),
        )
    except (UnsupportedRecurrence, ValueError, TypeError) as exc:
        raise BadBody(f"recurrence: {exc}") from None
