"""calbridge's domain model: immutable values shared by every provider.

Wire models (each provider's JSON) live inside the provider plugins; these are the
provider-neutral shapes applications see. Every value is an ``attrs`` frozen class and is
(de)serialised through :func:`calbridge.make_converter`, never cattrs' global converter.

Nothing is lost in translation: :attr:`Event.raw` and :attr:`Calendar.raw` keep the
provider's untouched payload.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from typing import Any

import attrs

from ._accounts import Account, AccountStatus, Channel, TokenSet
from ._secret import Secret
from ._time import EventTime, TimeKind, TimeRange

__all__ = [
    "Account",
    "AccountStatus",
    "Attendee",
    "Calendar",
    "Change",
    "ChangeKind",
    "ChangePage",
    "Channel",
    "Event",
    "EventDraft",
    "EventStatus",
    "EventTime",
    "FreeBusy",
    "FreeBusyStatus",
    "Person",
    "ResponseStatus",
    "Secret",
    "SeriesRole",
    "TimeKind",
    "TimeRange",
    "TokenSet",
    "Transparency",
    "Visibility",
]

_RECURRENCE_PREFIXES = ("RRULE:", "RDATE", "EXDATE", "EXRULE:")
# --------------------------------------------------------------------------- people


class ResponseStatus(enum.StrEnum):
    """An attendee's answer."""

    NEEDS_ACTION = "needs_action"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    TENTATIVE = "tentative"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class Person:
    """An organizer or creator."""

    email: str | None = None
    name: str | None = None


@attrs.frozen(kw_only=True)
class Attendee:
    """An invitee and their response."""

    email: str
    name: str | None = None
    response: ResponseStatus = ResponseStatus.NEEDS_ACTION
    optional: bool = False
    organizer: bool = False
    resource: bool = False


# --------------------------------------------------------------------------- calendars and events


@attrs.frozen(kw_only=True)
class Calendar:
    """A calendar as one provider exposes it."""

    id: str
    provider: str
    name: str
    primary: bool = False
    read_only: bool = False
    time_zone: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)


class EventStatus(enum.StrEnum):
    """Whether the event takes place."""

    CONFIRMED = "confirmed"
    TENTATIVE = "tentative"
    CANCELLED = "cancelled"


class Transparency(enum.StrEnum):
    """Whether the event blocks time in free/busy."""

    OPAQUE = "opaque"
    TRANSPARENT = "transparent"


class Visibility(enum.StrEnum):
    """Who may see the event's details."""

    DEFAULT = "default"
    PUBLIC = "public"
    PRIVATE = "private"
    CONFIDENTIAL = "confidential"


class SeriesRole(enum.StrEnum):
    """Where an event stands in a recurring series."""

    SINGLE = "single"  #: not recurring
    MASTER = "master"  #: the series definition (carries the recurrence lines)
    INSTANCE = "instance"  #: an unmodified occurrence of a series
    EXCEPTION = "exception"  #: an occurrence that was moved, edited or cancelled


_INSTANCE = SeriesRole.INSTANCE
_EXCEPTION = SeriesRole.EXCEPTION


def _recurrence(lines: Any) -> tuple[str, ...]:
    out = tuple(str(x).strip() for x in lines)
    for line in out:
        if not line.upper().startswith(_RECURRENCE_PREFIXES):
            raise ValueError(f"not a recurrence line (RRULE/RDATE/EXDATE/EXRULE): {line!r}")
        if "DTSTART" in line.upper().split(":", 1)[0]:
            raise ValueError("recurrence lines carry no DTSTART; the event start is the anchor")
    return out


def _properties(value: Mapping[str, str]) -> dict[str, str]:
    out = dict(value)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("event properties map str keys to str values")
    return out


def _optional_properties(value: Mapping[str, str] | None) -> dict[str, str]:
    return _properties(value) if value else {}


def _optional_raw(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else value


@attrs.frozen(kw_only=True)
class Event:
    """A calendar event as a provider holds it.

    ``id`` is the provider's event id; ``ical_uid`` is shared across providers that front
    the same native calendar. Series identity: a master carries ``recurrence``; an instance
    or exception carries ``recurring_event_id`` and ``original_start``.
    """

    id: str
    calendar_id: str
    provider: str
    start: EventTime
    end: EventTime
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    ical_uid: str | None = None
    status: EventStatus = EventStatus.CONFIRMED
    transparency: Transparency = Transparency.OPAQUE
    visibility: Visibility = Visibility.DEFAULT
    organizer: Person | None = None
    attendees: tuple[Attendee, ...] = ()
    recurrence: tuple[str, ...] = attrs.field(default=(), converter=_recurrence)
    series_role: SeriesRole = SeriesRole.SINGLE
    recurring_event_id: str | None = None
    original_start: EventTime | None = None
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    etag: str | None = None
    #: string key -> value pairs the app stores for correlation (e.g. its own ids)
    properties: Mapping[str, str] = attrs.field(
        factory=dict, converter=_optional_properties, hash=False
    )
    #: the provider's untouched payload
    raw: Mapping[str, Any] = attrs.field(
        factory=dict, converter=_optional_raw, hash=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        _event_times("Event", self.start, self.end)
        if self.start.is_all_day != self.end.is_all_day:
            raise ValueError("start and end must both be all-day or both be timed")
        if not self.recurring_event_id and self.series_role in (_INSTANCE, _EXCEPTION):
            raise ValueError("an instance or exception needs recurring_event_id")


def _event_times(owner: str, *times: object) -> None:
    """A clear TypeError when a start or end is not an :class:`EventTime` (most often a raw
    ``datetime``, which cannot say whether it is all-day, floating or zoned)."""
    for field, value in zip(("start", "end", "original_start"), times, strict=False):
        if isinstance(value, EventTime):
            continue
        if isinstance(value, dt.datetime):
            hint = (
                "EventTime.zoned(value, 'Europe/Paris') for an aware datetime"
                if value.tzinfo is not None
                else "EventTime.floating(value) for a wall-clock time, or attach a zone "
                "and use EventTime.zoned(...)"
            )
        elif isinstance(value, dt.date):
            hint = "EventTime.all_day(value)"
        else:
            hint = "EventTime.zoned(...), EventTime.floating(...) or EventTime.all_day(...)"
        raise TypeError(
            f"{owner}.{field} takes a calbridge.EventTime, not {type(value).__name__} "
            f"{value!r}: wrap it with {hint}"
        )


@attrs.frozen(kw_only=True)
class EventDraft:
    """What an application asks a provider to create or update.

    Provider ids, etags and timestamps are the provider's to assign, so they are absent.
    """

    start: EventTime
    end: EventTime
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    status: EventStatus = EventStatus.CONFIRMED
    transparency: Transparency = Transparency.OPAQUE
    visibility: Visibility = Visibility.DEFAULT
    attendees: tuple[Attendee, ...] = ()
    recurrence: tuple[str, ...] = attrs.field(default=(), converter=_recurrence)
    properties: Mapping[str, str] = attrs.field(factory=dict, converter=_properties, hash=False)

    def __attrs_post_init__(self) -> None:
        _event_times("EventDraft", self.start, self.end)
        if self.start.is_all_day != self.end.is_all_day:
            raise ValueError("start and end must both be all-day or both be timed")
        if self.end.as_utc() <= self.start.as_utc():
            raise ValueError("an event must end after it starts")
        if self.recurrence and self.start.kind is TimeKind.FLOATING:
            raise ValueError("a recurring event needs a zoned or all-day start (IANA tzid)")


# --------------------------------------------------------------------------- free/busy


class FreeBusyStatus(enum.StrEnum):
    """How a block of time is held."""

    BUSY = "busy"
    TENTATIVE = "tentative"
    FREE = "free"
    UNAVAILABLE = "unavailable"


@attrs.frozen(kw_only=True)
class FreeBusy:
    """A block of time that is not free."""

    calendar_id: str
    start: dt.datetime
    end: dt.datetime
    status: FreeBusyStatus = FreeBusyStatus.BUSY


# --------------------------------------------------------------------------- changes


class ChangeKind(enum.StrEnum):
    """What happened to an event."""

    UPSERTED = "upserted"
    DELETED = "deleted"


@attrs.frozen(kw_only=True)
class Change:
    """One event created/updated (``event`` set) or deleted (only ``event_id``)."""

    kind: ChangeKind
    calendar_id: str
    event_id: str
    event: Event | None = None
    #: the cursor of the sync round this change came with (None until the round ends)
    cursor: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind is ChangeKind.UPSERTED and self.event is None:
            raise ValueError("an upsert carries its event")


@attrs.frozen(kw_only=True)
class ChangePage:
    """One page of a change stream.

    ``cursor`` is set on the last page only: it is what to store and pass next time.
    ``full`` is True when the stream is a full read (no cursor given, or a reset), in
    which case anything not seen in the round should be treated as deleted.
    """

    changes: tuple[Change, ...]
    cursor: str | None = None
    full: bool = False

    @property
    def last(self) -> bool:
        """True on the page that ends the round."""
        return self.cursor is not None
