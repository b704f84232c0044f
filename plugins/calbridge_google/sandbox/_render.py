"""World values rendered as Google Calendar v3 JSON, and Google request bodies parsed back.

Tombstones follow Google's rules: a deleted event lists as ``{id, status: "cancelled"}``
only; a cancelled exception of a live series as ``{id, status, recurringEventId,
originalStartTime}``; ``events.get`` of a deleted event still returns its details.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calbridge import (
    Attendee,
    EventStatus,
    EventTime,
    ResponseStatus,
    TimeKind,
    Transparency,
    Visibility,
)
from calbridge.sandbox import NativeCalendar, NativeEvent, Occurrence

from ._params import GoogleError

__all__ = [
    "calendar_entry",
    "cancelled_instance_json",
    "etag",
    "event_fields",
    "event_json",
    "occurrence_json",
    "rfc3339",
    "time_json",
    "tombstone_json",
]

_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
_RESPONSES = {
    ResponseStatus.NEEDS_ACTION: "needsAction",
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "tentative",
    ResponseStatus.UNKNOWN: "needsAction",
}
_RESPONSES_IN = {v: k for k, v in _RESPONSES.items() if k is not ResponseStatus.UNKNOWN}


def rfc3339(value: dt.datetime) -> str:
    """Google's timestamp style: UTC with milliseconds (``2026-01-05T09:00:00.000Z``)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{value.microsecond // 1000:03d}Z"
    )


def _offset_text(value: dt.datetime) -> str:
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def time_json(t: EventTime, default_tz: str) -> dict[str, str]:
    """An EventDateTime: ``date``, or ``dateTime`` with an offset plus the IANA ``timeZone``."""
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return {"date": t.date.isoformat()}
    assert t.datetime is not None
    if t.kind is TimeKind.FLOATING:
        zone = ZoneInfo(default_tz)
        return {
            "dateTime": _offset_text(t.datetime.replace(tzinfo=zone)),
            "timeZone": default_tz,
        }
    tzid = t.tzid or "UTC"
    try:
        local = t.datetime.astimezone(ZoneInfo(tzid))
    except (ZoneInfoNotFoundError, ValueError):
        local = t.datetime
    return {"dateTime": _offset_text(local), "timeZone": tzid}


def etag(e: NativeEvent) -> str:
    """A quoted number, new on every write of the event and unique within its calendar."""
    return f'"3{e.sequence:09d}{e.version:06d}"'


def html_link(event_id: str, calendar_id: str) -> str:
    """A Google-style ``htmlLink``."""
    eid = base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode()).decode().rstrip("=")
    return f"https://www.google.com/calendar/event?eid={eid}"


def _common(e: NativeEvent, cal: NativeCalendar) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": etag(e),
        "id": e.id,
        "status": e.status.value,
        "htmlLink": html_link(e.id, cal.id),
        "created": rfc3339(e.created),
        "updated": rfc3339(e.updated),
    }
    for key in ("summary", "description", "location"):
        value = getattr(e, key)
        if value is not None:
            out[key] = value
    owner = e.organizer.email if e.organizer else cal.owner
    out["creator"] = {"email": owner, "self": owner == cal.owner}
    organizer: dict[str, Any] = {"email": owner, "self": owner == cal.owner}
    if e.organizer and e.organizer.name:
        organizer["displayName"] = e.organizer.name
    out["organizer"] = organizer
    return out


def _tail(e: NativeEvent, cal: NativeCalendar) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if e.transparency is Transparency.TRANSPARENT:
        out["transparency"] = "transparent"
    if e.visibility is not Visibility.DEFAULT:
        out["visibility"] = e.visibility.value
    out["iCalUID"] = e.ical_uid
    out["sequence"] = max(0, e.version - 1)
    if e.attendees:
        out["attendees"] = [
            {
                "email": a.email,
                **({"displayName": a.name} if a.name else {}),
                **({"optional": True} if a.optional else {}),
                **({"organizer": True} if a.organizer else {}),
                **({"resource": True} if a.resource else {}),
                **({"self": True} if a.email == cal.owner else {}),
                "responseStatus": _RESPONSES[a.response],
            }
            for a in e.attendees
        ]
    props: dict[str, dict[str, str]] = {}
    if e.private_properties:
        props["private"] = dict(e.private_properties)
    if e.shared_properties:
        props["shared"] = dict(e.shared_properties)
    if props:
        out["extendedProperties"] = props
    out["reminders"] = {"useDefault": True}
    out["eventType"] = "default"
    return out


def event_json(e: NativeEvent, cal: NativeCalendar) -> dict[str, Any]:
    """A stored event (single, master or exception) with all its details."""
    tz = cal.time_zone
    out = _common(e, cal)
    out["start"] = time_json(e.start, tz)
    out["end"] = time_json(e.end, tz)
    if e.recurrence:
        out["recurrence"] = list(e.recurrence)
    if e.recurring_event_id:
        out["recurringEventId"] = e.recurring_event_id
        if e.original_start is not None:
            out["originalStartTime"] = time_json(e.original_start, tz)
    out.update(_tail(e, cal))
    return out


def occurrence_json(o: Occurrence, cal: NativeCalendar) -> dict[str, Any]:
    """One expanded occurrence: a single event, an exception, or a plain instance."""
    if not o.recurring or o.event.recurring_event_id:
        return event_json(o.event, cal)
    master, tz = o.event, cal.time_zone
    out = _common(master, cal)
    out["id"] = o.instance_id
    out["htmlLink"] = html_link(o.instance_id, cal.id)
    out["start"] = time_json(o.start, tz)
    out["end"] = time_json(o.end, tz)
    out["recurringEventId"] = master.id
    assert o.original_start is not None
    out["originalStartTime"] = time_json(o.original_start, tz)
    out.update(_tail(master, cal))
    return out


def tombstone_json(e: NativeEvent, cal: NativeCalendar) -> dict[str, Any]:
    """What a list shows of a deleted event or a cancelled exception (Google's minimum)."""
    out: dict[str, Any] = {
        "kind": "calendar#event",
        "etag": etag(e),
        "id": e.id,
        "status": "cancelled",
    }
    if e.recurring_event_id and not e.deleted and e.original_start is not None:
        out["recurringEventId"] = e.recurring_event_id
        out["originalStartTime"] = time_json(e.original_start, cal.time_zone)
    return out


def cancelled_instance_json(
    master: NativeEvent, o: Occurrence, cal: NativeCalendar
) -> dict[str, Any]:
    """One instance of a deleted series, as expanded reads show it."""
    assert o.original_start is not None
    return {
        "kind": "calendar#event",
        "etag": etag(master),
        "id": o.instance_id,
        "status": "cancelled",
        "recurringEventId": master.id,
        "originalStartTime": time_json(o.original_start, cal.time_zone),
    }


def calendar_entry(cal: NativeCalendar) -> dict[str, Any]:
    """A ``calendar#calendarListEntry``."""
    out: dict[str, Any] = {
        "kind": "calendar#calendarListEntry",
        "etag": '"' + str(int(hashlib.sha256(cal.id.encode()).hexdigest()[:12], 16)) + '"',
        "id": cal.id,
        "summary": cal.name,
        "timeZone": cal.time_zone,
        "colorId": "14" if cal.primary else "7",
        "backgroundColor": "#9fe1e7" if cal.primary else "#42d692",
        "foregroundColor": "#000000",
        "selected": True,
        "accessRole": "reader" if cal.read_only else "owner",
        "defaultReminders": [] if cal.read_only else [{"method": "popup", "minutes": 10}],
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
    }
    if cal.primary:
        out["primary"] = True
    if cal.deleted:
        out["deleted"] = True
    return out


# --------------------------------------------------------------------------- request bodies


def _bad(message: str, reason: str = "invalid", location: str | None = None) -> GoogleError:
    return GoogleError(status=400, reason=reason, message=message, location=location)


def parse_time(value: Any, field: str, *, recurring: bool) -> EventTime:
    """An EventDateTime from a request body, with Google's rules."""
    if not isinstance(value, dict):
        raise _bad(f"Missing {field} time.", "required")
    if value.get("date"):
        try:
            return EventTime.all_day(dt.date.fromisoformat(str(value["date"])))
        except ValueError:
            raise _bad("Invalid value for date.", "invalid") from None
    text, tzid = value.get("dateTime"), value.get("timeZone")
    if not text:
        raise _bad(f"Missing {field} time.", "required")
    if tzid is not None:
        try:
            zone = ZoneInfo(str(tzid))
        except (ZoneInfoNotFoundError, ValueError):
            raise _bad(f"Invalid time zone definition for {field} time.") from None
    if recurring and not tzid and field == "start":
        raise _bad(f"Missing time zone definition for {field} time.", "required")
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"Invalid value for {field} time.") from None
    if when.tzinfo is None:
        if not tzid:
            raise _bad(f"Missing time zone definition for {field} time.", "required")
        when = when.replace(tzinfo=zone)
    return EventTime.zoned(when.replace(microsecond=0), str(tzid) if tzid else "UTC")


def _recurrence(lines: Any) -> tuple[str, ...]:
    if lines is None:
        return ()
    if not isinstance(lines, list):
        raise _bad("Invalid recurrence rule.")
    out = []
    for line in lines:
        text = str(line).strip()
        head = text.split(":", 1)[0].split(";", 1)[0].upper()
        if head not in ("RRULE", "EXRULE", "RDATE", "EXDATE"):
            raise _bad("Invalid recurrence rule.")
        out.append(text)
    return tuple(out)


def _attendees(items: Any) -> tuple[Attendee, ...]:
    if items is None:
        return ()
    out = []
    for item in items:
        if not isinstance(item, dict) or not item.get("email"):
            raise _bad("Missing attendee email.", "required")
        out.append(
            Attendee(
                email=str(item["email"]).lower(),
                name=item.get("displayName"),
                response=_RESPONSES_IN.get(
                    item.get("responseStatus", ""), ResponseStatus.NEEDS_ACTION
                ),
                optional=bool(item.get("optional", False)),
                organizer=bool(item.get("organizer", False)),
                resource=bool(item.get("resource", False)),
            )
        )
    return tuple(out)


def check_client_id(value: Any) -> str:
    """A client-supplied event id: base32hex, 5-1024 characters."""
    text = str(value)
    if not _ID_RE.match(text):
        raise _bad("Invalid resource id value.", "invalid", "id")
    return text


_FIELDS = (
    "summary",
    "description",
    "location",
    "start",
    "end",
    "recurrence",
    "status",
    "transparency",
    "visibility",
    "attendees",
    "extendedProperties",
)


def event_fields(body: dict[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """World ``insert_event``/``update_event`` keyword arguments from a Google body.

    With ``partial`` (PATCH) only the keys present are returned; otherwise absent fields
    are reset (PUT is a full replace).
    """
    recurrence = _recurrence(body.get("recurrence")) if "recurrence" in body else ()
    recurring = bool(recurrence)
    out: dict[str, Any] = {}
    present = set(body) if partial else set(_FIELDS)
    for key in ("summary", "description", "location"):
        if key in present:
            value = body.get(key)
            out[key] = None if value is None else str(value)
    if "start" in present:
        out["start"] = parse_time(body.get("start"), "start", recurring=recurring)
    if "end" in present:
        end = parse_time(body.get("end"), "end", recurring=recurring)
        start = out.get("start")
        if recurring and start is not None and not (body.get("end") or {}).get("timeZone"):
            assert end.datetime is not None or end.is_all_day
            if end.datetime is not None and start.tzid:
                end = EventTime.zoned(end.datetime.astimezone(ZoneInfo(start.tzid)), start.tzid)
        out["end"] = end
    if "recurrence" in present:
        out["recurrence"] = recurrence
    if "status" in present:
        status = body.get("status") or "confirmed"
        if status not in ("confirmed", "tentative", "cancelled"):
            raise _bad("Invalid value for status.")
        out["status"] = EventStatus(status)
    if "transparency" in present:
        value = body.get("transparency") or "opaque"
        if value not in ("opaque", "transparent"):
            raise _bad("Invalid value for transparency.")
        out["transparency"] = Transparency(value)
    if "visibility" in present:
        value = body.get("visibility") or "default"
        if value not in ("default", "public", "private", "confidential"):
            raise _bad("Invalid value for visibility.")
        out["visibility"] = Visibility(value)
    if "attendees" in present:
        out["attendees"] = _attendees(body.get("attendees"))
    if "extendedProperties" in present:
        props = body.get("extendedProperties") or {}
        for scope in ("private", "shared"):
            values = props.get(scope) or {}
            out[f"{scope}_properties"] = {str(k): str(v) for k, v in values.items()}
    return out


def check_times(start: EventTime, end: EventTime) -> None:
    """Google's checks on a finished event: matching kinds and a non-empty range."""
    if start.is_all_day != end.is_all_day:
        raise _bad("Start and end times must either both be date or both be dateTime.")
    if end.as_utc() < start.as_utc():
        raise GoogleError(
            status=400,
            reason="timeRangeEmpty",
            message="The specified time range is empty.",
            domain="calendar",
        )
