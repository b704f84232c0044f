"""Conversion between Cronofy's wire model and calbridge's domain model.

Reads: :func:`event_from_read` is the hot path (every event of every page goes through it):
it converts a :class:`CronofyEvent`, decoded by msgspec straight from the page's bytes (see
``_wire``); :func:`events_from_page` does a whole page, keeping each event's JSON text as
its lazily decoded ``raw``. Writes:
:func:`upsert_body` turns an :class:`calbridge.EventDraft` into Cronofy's upsert body.

Identity: an event's calbridge ``id`` is its ``event_id`` when the app manages it (the
caller's idempotency key) and its ``event_uid`` otherwise; Cronofy's event uids start
with ``evt_``, which is how :func:`id_field` tells the two apart on the way back.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import calbridge
from calbridge import RawPayload
from calbridge.errors import InvalidRequest, ProviderResponseError
from calbridge.toolkit import wire_dict

from ._wire import (
    ChannelWire,
    CronofyCalendar,
    CronofyEvent,
    EventsPage,
    EventUpsert,
    LocalizedTime,
    Location,
    Person,
    TokenResponse,
    WireTime,
    decode_event,
    event_struct,
)

__all__ = [
    "UID_PREFIX",
    "calendar_from_wire",
    "channel_from_wire",
    "event_from_json",
    "event_from_read",
    "events_from_page",
    "format_instant",
    "id_field",
    "parse_instant",
    "read_event_id",
    "time_from_wire",
    "token_set",
    "upsert_body",
]

PROVIDER = "cronofy"
#: Cronofy's event uids start with this; the app's own event ids must not
UID_PREFIX = "evt_"

_ZONED = calbridge.TimeKind.ZONED
_DATE = calbridge.TimeKind.DATE
_UTC = dt.UTC

_STATUS = {
    "confirmed": calbridge.EventStatus.CONFIRMED,
    "tentative": calbridge.EventStatus.TENTATIVE,
    "cancelled": calbridge.EventStatus.CANCELLED,
}
_RESPONSE = {
    "needs_action": calbridge.ResponseStatus.NEEDS_ACTION,
    "accepted": calbridge.ResponseStatus.ACCEPTED,
    "declined": calbridge.ResponseStatus.DECLINED,
    "tentative": calbridge.ResponseStatus.TENTATIVE,
}
_OPAQUE = calbridge.Transparency.OPAQUE
_TRANSPARENT = calbridge.Transparency.TRANSPARENT
_PRIVATE = calbridge.Visibility.PRIVATE
_DEFAULT_VIS = calbridge.Visibility.DEFAULT
_CONFIRMED = calbridge.EventStatus.CONFIRMED
_SINGLE = calbridge.SeriesRole.SINGLE
_INSTANCE = calbridge.SeriesRole.INSTANCE
_UNKNOWN = calbridge.ResponseStatus.UNKNOWN


def id_field(event_id: str) -> str:
    """Which upsert/delete key carries ``event_id``: ``"event_uid"`` or ``"event_id"``."""
    return "event_uid" if event_id.startswith(UID_PREFIX) else "event_id"


# --------------------------------------------------------------------------- times


def parse_instant(text: str) -> dt.datetime:
    """An aware datetime from Cronofy's ISO text (``Z`` or an offset)."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value


def format_instant(value: dt.datetime) -> str:
    """Cronofy's UTC time text: ``2026-01-05T09:00:00Z``."""
    return value.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: WireTime) -> calbridge.EventTime:
    # a start/end as decoded: a date or UTC text, or a LocalizedTime
    if isinstance(value, LocalizedTime):
        text, tzid = value.time, value.tzid or "UTC"
    else:
        text, tzid = value, "UTC"
    if len(text) == 10:
        return calbridge.EventTime.all_day(dt.date.fromisoformat(text))
    return calbridge.EventTime.zoned(parse_instant(text), tzid)


def time_from_wire(value: WireTime) -> calbridge.EventTime:
    """A domain :class:`calbridge.EventTime` from a Cronofy start/end."""
    try:
        if isinstance(value, Mapping):  # {"time": ..., "tzid": ...} already decoded
            return _time(LocalizedTime(time=value["time"], tzid=value.get("tzid")))
        return _time(value)
    except (ValueError, TypeError, KeyError):
        raise ProviderResponseError(f"unreadable event time {value!r}", provider=PROVIDER) from None


def wire_time(value: calbridge.EventTime, default_tzid: str) -> WireTime:
    """A Cronofy start/end for a domain time.

    All-day dates go as ``YYYY-MM-DD``; zoned times as ``{"time": <UTC>, "tzid": <zone>}``;
    floating times (which Cronofy lacks) are placed in ``default_tzid``.
    """
    if value.kind is _DATE:
        assert value.date is not None
        return value.date.isoformat()
    assert value.datetime is not None
    if value.kind is _ZONED:
        return LocalizedTime(time=format_instant(value.datetime), tzid=_zone(value.tzid))
    try:
        zone = ZoneInfo(default_tzid)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"option default_tzid={default_tzid!r} is not an IANA time zone", provider=PROVIDER
        ) from None
    return LocalizedTime(
        time=format_instant(value.datetime.replace(tzinfo=zone)), tzid=default_tzid
    )


def _zone(tzid: str | None) -> str:
    if not tzid or tzid == "UTC":
        return "Etc/UTC"
    return tzid


# --------------------------------------------------------------------------- events


def read_event_id(wire: CronofyEvent) -> str:
    """The domain id of a read event: the app's ``event_id`` for its own single events,
    else ``event_uid`` (every occurrence of a series has its own ``event_uid``, while a
    managed series' occurrences all share the series' ``event_id``)."""
    if wire.event_id and not (wire.recurring and wire.event_uid):
        return wire.event_id
    return wire.event_uid


def event_from_read(wire: CronofyEvent, raw: Mapping[str, Any]) -> calbridge.Event:
    """A domain event from one Cronofy event (the read hot path); ``raw`` becomes ``Event.raw``."""
    try:
        series = wire.series_identifier
        recurring = bool(wire.recurring) and bool(series)
        location = wire.location
        organizer = wire.organizer
        return calbridge.Event(
            id=read_event_id(wire),
            calendar_id=wire.calendar_id,
            provider=PROVIDER,
            start=_time(wire.start),
            end=_time(wire.end),
            summary=wire.summary,
            description=wire.description,
            location=location.description if location is not None else None,
            ical_uid=wire.ical_uid,
            status=_STATUS.get(wire.status or "", _CONFIRMED),
            transparency=_TRANSPARENT if wire.transparency == "transparent" else _OPAQUE,
            visibility=_PRIVATE if wire.event_private else _DEFAULT_VIS,
            organizer=_person(organizer) if organizer is not None else None,
            attendees=tuple(_attendee(a) for a in wire.attendees or ()),
            # no recurrence: Cronofy reads instances, never the series master
            series_role=_INSTANCE if recurring else _SINGLE,
            recurring_event_id=series if recurring else None,
            created=parse_instant(wire.created) if wire.created else None,
            updated=parse_instant(wire.updated) if wire.updated else None,
            raw=raw,
        )
    except (ValueError, TypeError) as exc:
        raise ProviderResponseError(
            f"unreadable event ({type(exc).__name__}: {exc})", provider=PROVIDER
        ) from None


def event_from_json(data: Mapping[str, Any]) -> calbridge.Event:
    """A domain event from one already-decoded Cronofy event (a dict)."""
    return event_from_read(event_struct(data), data)


def events_from_page(
    page: EventsPage, *, deleted: bool = False, since: dt.datetime | None = None
) -> list[calbridge.Event]:
    """A page's events as domain events.

    Deleted ones are left out unless ``deleted``; with ``since``, so are events that start
    before it (a sub-window keeps only the events that start in it).
    """
    out = []
    for text in page.events:
        wire = decode_event(text)
        if wire.deleted and not deleted:
            continue
        event = event_from_read(wire, RawPayload(text, PROVIDER))
        if since is not None and event.start.as_utc() < since:
            continue
        out.append(event)
    return out


def _attendee(wire: Person) -> calbridge.Attendee:
    return calbridge.Attendee(
        email=wire.email or "",
        name=wire.display_name,
        response=_RESPONSE.get(wire.status or "", _UNKNOWN),
    )


def _person(wire: Person) -> calbridge.Person | None:
    if wire.email is None and wire.display_name is None:
        return None
    return calbridge.Person(email=wire.email, name=wire.display_name)


# --------------------------------------------------------------------------- writes


_FREQ = {"DAILY": "daily", "WEEKLY": "weekly", "MONTHLY": "monthly", "YEARLY": "yearly"}
_DAYS = {
    "MO": "monday",
    "TU": "tuesday",
    "WE": "wednesday",
    "TH": "thursday",
    "FR": "friday",
    "SA": "saturday",
    "SU": "sunday",
}
_BYDAY = re.compile(r"^(MO|TU|WE|TH|FR|SA|SU)$")


def _recurrence(lines: tuple[str, ...]) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for line in lines:
        head, _, body = line.partition(":")
        if head.upper() != "RRULE":
            raise InvalidRequest(
                f"Cronofy recurrence takes RRULE lines only, not {head}", provider=PROVIDER
            )
        parts = dict(p.split("=", 1) for p in body.split(";") if "=" in p)
        rule: dict[str, Any] = {}
        for name, value in parts.items():
            key = name.upper()
            if key == "FREQ" and value.upper() in _FREQ:
                rule["frequency"] = _FREQ[value.upper()]
            elif key == "INTERVAL":
                rule["interval"] = int(value)
            elif key == "COUNT":
                rule["count"] = int(value)
            elif key == "UNTIL":
                until = value.rstrip("Z")
                rule["until"] = (
                    f"{until[:4]}-{until[4:6]}-{until[6:8]}" if len(until) >= 8 else value
                )
            elif key == "BYDAY" and all(_BYDAY.match(d) for d in value.upper().split(",")):
                rule["by_day"] = [_DAYS[d] for d in value.upper().split(",")]
            elif key != "WKST":
                raise InvalidRequest(
                    f"Cronofy recurrence cannot express {key}={value}", provider=PROVIDER
                )
        if "frequency" not in rule:
            raise InvalidRequest("an RRULE needs a FREQ", provider=PROVIDER)
        rules.append(rule)
    return {"rules": rules}


def upsert_body(
    draft: calbridge.EventDraft,
    *,
    event_id: str | None = None,
    event_uid: str | None = None,
    default_tzid: str = "Etc/UTC",
) -> dict[str, Any]:
    """Cronofy's upsert body for ``draft``, keyed by ``event_id`` (managed) or ``event_uid``."""
    if (event_id is None) == (event_uid is None):
        raise ValueError("exactly one of event_id and event_uid")
    invite = [
        {"email": a.email, **({"display_name": a.name} if a.name else {})}
        for a in draft.attendees
        if a.email and not a.organizer
    ]
    body = EventUpsert(
        event_id=event_id,
        event_uid=event_uid,
        summary=draft.summary or "",
        description=draft.description,
        start=wire_time(draft.start, default_tzid),
        end=wire_time(draft.end, default_tzid),
        tzid=_zone(draft.start.tzid) if draft.start.kind is _ZONED else None,
        location=Location(description=draft.location) if draft.location else None,
        transparency="transparent" if draft.transparency is _TRANSPARENT else None,
        event_private=True
        if draft.visibility in (_PRIVATE, calbridge.Visibility.CONFIDENTIAL)
        else None,
        attendees={"invite": invite} if invite else None,
        recurrence=_recurrence(draft.recurrence) if draft.recurrence else None,
    )
    return wire_dict(body)


def event_from_draft(
    draft: calbridge.EventDraft, *, event_id: str, calendar_id: str, body: Mapping[str, Any]
) -> calbridge.Event:
    """The event a 202 upsert will become (Cronofy answers writes with no body)."""
    return calbridge.Event(
        id=event_id,
        calendar_id=calendar_id,
        provider=PROVIDER,
        start=draft.start,
        end=draft.end,
        summary=draft.summary,
        description=draft.description,
        location=draft.location,
        status=draft.status,
        transparency=draft.transparency,
        visibility=draft.visibility,
        attendees=draft.attendees,
        recurrence=draft.recurrence,
        series_role=calbridge.SeriesRole.MASTER if draft.recurrence else _SINGLE,
        properties=draft.properties,
        raw={"request": dict(body), "status": 202},
    )


# --------------------------------------------------------------------------- other values


def calendar_from_wire(cal: CronofyCalendar, raw: Mapping[str, Any]) -> calbridge.Calendar:
    """A domain calendar."""
    return calbridge.Calendar(
        id=cal.calendar_id,
        provider=PROVIDER,
        name=cal.calendar_name,
        primary=cal.calendar_primary,
        read_only=cal.calendar_readonly or cal.calendar_deleted,
        raw=raw,
    )


def channel_from_wire(
    channel: ChannelWire, raw: Mapping[str, Any], *, account_id: str | None
) -> calbridge.Channel:
    """A domain channel; ``only_managed`` becomes the filter ``{"only_managed": "true"}``."""
    filters: dict[str, str] = {}
    if channel.filters.only_managed is not None:
        filters["only_managed"] = "true" if channel.filters.only_managed else "false"
    return calbridge.Channel(
        provider=PROVIDER,
        id=channel.channel_id,
        callback_url=channel.callback_url,
        account_id=account_id,
        calendar_ids=tuple(channel.filters.calendar_ids or ()),
        filters=filters,
        raw=raw,
    )


def token_set(
    answer: TokenResponse,
    *,
    previous: calbridge.TokenSet | None = None,
    now: float | None = None,
) -> calbridge.TokenSet:
    """A domain token set; a refresh keeps the previous refresh token and extras."""
    extra: dict[str, str] = dict(previous.extra) if previous is not None else {}
    for key in ("sub", "account_id", "service_account_id", "application_calendar_id"):
        value = getattr(answer, key)
        if value:
            extra[key] = value
    if answer.linking_profile is not None:
        for key in ("provider_name", "profile_id", "profile_name"):
            value = getattr(answer.linking_profile, key)
            if value:
                extra[f"linking_profile.{key}"] = value
    now = time.time() if now is None else now
    refresh = answer.refresh_token or (previous.refresh_token if previous else None)
    return calbridge.TokenSet(
        access_token=answer.access_token,
        refresh_token=refresh,
        expires_at=int(now + answer.expires_in) if answer.expires_in is not None else None,
        scope=tuple(answer.scope.split()),
        token_type="Bearer",  # noqa: S106 - the token type, not a secret
        extra=extra,
    )
