"""Cronofy's wire format: parsing request values and rendering events, calendars, userinfo."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calbridge import EventStatus, EventTime, ResponseStatus, TimeKind, Transparency, Visibility
from calbridge.sandbox import NativeCalendar, NativeEvent, Occurrence

from ._state import Account, CronofyCalendar

__all__ = [
    "FieldError",
    "calendar_json",
    "encode_json",
    "event_json",
    "event_uid_for",
    "instance_uid",
    "iso_z",
    "parse_bool",
    "parse_event_time",
    "parse_query_time",
    "zone",
]


class FieldError(ValueError):
    """A 422 field error: ``{"errors": {field: [{"key", "description"}]}}``."""

    def __init__(self, field: str, key: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.key = key
        self.description = description

    def body(self) -> dict[str, Any]:
        """The 422 response body."""
        return {"errors": {self.field: [{"key": self.key, "description": self.description}]}}


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_json(value: Any) -> bytes:
    """``value`` as a response body: exactly the bytes Starlette's ``JSONResponse`` sends."""
    return _ENCODER.encode(value).encode("utf-8")


def iso_z(when: dt.datetime) -> str:
    """``2014-09-13T19:00:00Z`` (UTC, whole seconds), as Cronofy writes times."""
    utc = when.astimezone(dt.UTC)
    if utc.year >= 1000:  # isoformat is strftime's text here, only faster
        return utc.isoformat(timespec="seconds")[:19] + "Z"
    return utc.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_bool(value: str | None, default: bool = False) -> bool:
    """``true``/``True``/``1`` and ``false``/``False``/``0`` (pycronofy sends ``True``)."""
    if value is None or value == "":
        return default
    return value.strip().lower() in ("true", "1", "yes")


def zone(tzid: str, field: str = "tzid") -> ZoneInfo:
    """An IANA zone, or a 422 for an unknown name."""
    try:
        return ZoneInfo(tzid)
    except (ZoneInfoNotFoundError, ValueError):
        raise FieldError(field, "errors.unknown_time_zone", f"unknown time zone {tzid!r}") from None


def parse_query_time(value: str, tz: ZoneInfo, field: str) -> dt.datetime:
    """``from``/``to``/``last_modified``: a date (midnight in ``tz``) or an ISO time."""
    try:
        if len(value) == 10:
            d = dt.date.fromisoformat(value)
            return dt.datetime(d.year, d.month, d.day, tzinfo=tz)
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise FieldError(field, "errors.invalid_time", f"{field} is not a valid time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def parse_event_time(value: Any, default_tzid: str, field: str) -> EventTime:
    """An upsert ``start``/``end``: a date, a UTC time, or ``{"time", "tzid"}``."""
    tzid = default_tzid
    if isinstance(value, Mapping):
        tzid = str(value.get("tzid") or default_tzid)
        value = value.get("time")
    if not isinstance(value, str) or not value:
        raise FieldError(field, "errors.required", "required")
    tz = zone(tzid, field)
    try:
        if len(value) == 10:
            return EventTime.all_day(dt.date.fromisoformat(value))
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FieldError(field, "errors.invalid_time", f"{field} is not a valid time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return EventTime.zoned(when.astimezone(tz), tzid)


@functools.lru_cache(maxsize=16384)
def event_uid_for(native_calendar_id: str, native_event_id: str) -> str:
    """A stable ``evt_external_…`` uid for a native event."""
    digest = hashlib.sha1(  # noqa: S324 - an id, not security
        f"{native_calendar_id}/{native_event_id}".encode()
    ).hexdigest()
    return f"evt_external_{digest[:24]}"


def instance_uid(native_calendar_id: str, master_id: str, original_start: EventTime) -> str:
    """A stable uid for one occurrence of a series."""
    return event_uid_for(native_calendar_id, f"{master_id}@{original_start.as_utc().isoformat()}")


def _time_json(t: EventTime, localized: bool, tzid: str) -> Any:
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        day = t.date.isoformat()
        return {"time": day, "tzid": tzid} if localized else day
    if t.kind is TimeKind.FLOATING:
        assert t.datetime is not None
        instant = t.datetime.replace(tzinfo=ZoneInfo(tzid))
    else:
        instant = t.as_utc()
    if localized:
        local_tz = t.tzid or tzid
        return {
            "time": instant.astimezone(ZoneInfo(local_tz)).replace(microsecond=0).isoformat(),
            "tzid": local_tz,
        }
    return iso_z(instant)


_RESPONSES = {
    ResponseStatus.NEEDS_ACTION: "needs_action",
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "tentative",
    ResponseStatus.UNKNOWN: "unknown",
}


def _participation(event: NativeEvent, email: str) -> str:
    if event.organizer is not None and (event.organizer.email or "").lower() == email:
        return "accepted"
    for attendee in event.attendees:
        if attendee.email.lower() == email:
            return _RESPONSES[attendee.response]
    return "unknown"


def event_json(
    occ: Occurrence,
    *,
    cal: CronofyCalendar,
    account: Account,
    event_uid: str,
    deleted: bool,
    last_modified: dt.datetime,
    managed_event_id: str | None,
    native_google: bool,
    localized: bool,
    tzid: str,
    google_event_ids: bool,
) -> dict[str, Any]:
    """One event of Read Events, in Cronofy's shape."""
    e = occ.event
    status = "cancelled" if deleted else e.status.value
    out: dict[str, Any] = {
        "calendar_id": cal.calendar_id,
        "event_uid": event_uid,
        "summary": e.summary or "",
        "description": e.description or "",
        "start": _time_json(occ.start, localized, tzid),
        "end": _time_json(occ.end, localized, tzid),
        "deleted": deleted,
        "created": iso_z(e.created),
        "updated": iso_z(last_modified),
        "participation_status": _participation(e, account.email),
        "attendees": [
            {"email": a.email, "display_name": a.name or a.email, "status": _RESPONSES[a.response]}
            for a in e.attendees
        ],
        "organizer": {
            "email": (e.organizer.email if e.organizer else None) or account.email,
            "display_name": (e.organizer.name if e.organizer else None) or account.name,
        },
        "transparency": e.transparency.value,
        "status": status,
        "categories": [],
        "recurring": occ.recurring,
        "event_private": e.visibility in (Visibility.PRIVATE, Visibility.CONFIDENTIAL),
        "options": {"delete": True, "update": True, "change_participation_status": True},
        "ical_uid": e.ical_uid,
    }
    if occ.recurring:
        master_id = e.recurring_event_id or e.id
        out["series_identifier"] = event_uid_for(cal.native_id, master_id)
    if e.location:
        out["location"] = {"description": e.location}
    if managed_event_id is not None:
        out["event_id"] = managed_event_id
    if google_event_ids and native_google:
        out["google_event_id"] = occ.instance_id or e.id
    return out


def free_busy_json(
    occ: Occurrence, cal: CronofyCalendar, localized: bool, tzid: str
) -> dict[str, Any]:
    """One block of Free Busy."""
    e = occ.event
    status = "tentative" if e.status is EventStatus.TENTATIVE else "busy"
    if e.transparency is Transparency.TRANSPARENT:
        status = "free"
    return {
        "calendar_id": cal.calendar_id,
        "start": _time_json(occ.start, localized, tzid),
        "end": _time_json(occ.end, localized, tzid),
        "free_busy_status": status,
    }


def calendar_json(cal: CronofyCalendar, native: NativeCalendar, account: Account) -> dict[str, Any]:
    """One calendar of List Calendars."""
    return {
        "provider_name": account.provider_name,
        "profile_id": account.profile_id,
        "profile_name": account.email,
        "calendar_id": cal.calendar_id,
        "calendar_name": native.name,
        "calendar_readonly": native.read_only,
        "calendar_deleted": native.deleted,
        "calendar_primary": native.primary,
        "calendar_integrated_conferencing_available": False,
        "calendar_attachments_available": False,
        "permission_level": "unrestricted",
    }


def profile_json(account: Account, relink_url: str) -> dict[str, Any]:
    """One profile of ``/v1/profiles``."""
    out: dict[str, Any] = {
        "provider_name": account.provider_name,
        "provider_service": account.provider_service,
        "profile_id": account.profile_id,
        "profile_name": account.email,
        "profile_connected": account.profile_connected,
        "profile_initial_sync_required": not account.initial_sync_done,
    }
    if not account.profile_connected:
        out["profile_relink_url"] = relink_url
    return out
