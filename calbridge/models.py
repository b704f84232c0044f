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
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._secret import Secret, _opt_secret, _secret

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
_UTC = dt.UTC


def _aware(name: str, value: dt.datetime) -> None:
    tzinfo = value.tzinfo
    if tzinfo is _UTC:  # the common case, aware without asking (utcoffset() is costly)
        return
    if tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


# --------------------------------------------------------------------------- time


class TimeKind(enum.StrEnum):
    """How an :class:`EventTime` is anchored."""

    DATE = "date"  #: an all-day date; as an event end it is exclusive
    FLOATING = "floating"  #: a wall-clock time in whatever zone the viewer is in
    ZONED = "zoned"  #: an instant, displayed in an IANA time zone


# an enum member read through its class costs a lookup each time; these are read per event
_DATE = TimeKind.DATE
_FLOATING = TimeKind.FLOATING
_ZONED = TimeKind.ZONED


@attrs.frozen(kw_only=True)
class EventTime:
    """The start or end of an event, keeping all-day, floating and zoned times apart.

    Build one with :meth:`all_day`, :meth:`floating` or :meth:`zoned`::

        EventTime.all_day(dt.date(2026, 12, 24))
        paris = ZoneInfo("Europe/Paris")
        EventTime.zoned(dt.datetime(2026, 12, 24, 9, tzinfo=paris), "Europe/Paris")
    """

    kind: TimeKind
    date: dt.date | None = None
    #: naive for FLOATING; timezone-aware (any offset) for ZONED
    datetime: dt.datetime | None = None
    #: IANA zone name for ZONED times (``"UTC"`` when the provider gave only an offset)
    tzid: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind is _DATE:
            if self.date is None or self.datetime is not None or self.tzid is not None:
                raise ValueError("an all-day EventTime has a date and nothing else")
            if isinstance(self.date, dt.datetime):
                raise ValueError("an all-day EventTime takes a date, not a datetime")
        elif self.kind is _FLOATING:
            if self.datetime is None or self.date is not None or self.tzid is not None:
                raise ValueError("a floating EventTime has a naive datetime and no tzid")
            if self.datetime.tzinfo is not None:
                raise ValueError("a floating EventTime takes a naive datetime")
        else:
            if self.datetime is None or self.date is not None or not self.tzid:
                raise ValueError("a zoned EventTime has an aware datetime and a tzid")
            _aware("EventTime.datetime", self.datetime)

    @classmethod
    def all_day(cls, date: dt.date) -> EventTime:
        """An all-day date (end dates are exclusive)."""
        if not isinstance(date, dt.date) or isinstance(date, dt.datetime):
            raise ValueError("an all-day EventTime takes a date, not a datetime")
        return _new_time(cls, _DATE, date, None, None)

    @classmethod
    def floating(cls, local: dt.datetime) -> EventTime:
        """A wall-clock time with no zone."""
        if not isinstance(local, dt.datetime) or local.tzinfo is not None:
            raise ValueError("a floating EventTime takes a naive datetime")
        return _new_time(cls, _FLOATING, None, local, None)

    @classmethod
    def zoned(cls, instant: dt.datetime, tzid: str | None = None) -> EventTime:
        """An instant shown in ``tzid`` (defaults to the datetime's own zone key, else UTC)."""
        if instant.tzinfo is not _UTC:  # UTC, the usual case, is aware: no call needed
            _aware("instant", instant)
        if tzid is None:
            tzid = getattr(instant.tzinfo, "key", None) or "UTC"
        elif not tzid:
            raise ValueError("a zoned EventTime has an aware datetime and a tzid")
        # _new_time written out: providers build one or two of these per event read
        out = object.__new__(cls)
        _t_kind(out, _ZONED)
        _t_date(out, None)
        _t_datetime(out, instant)
        _t_tzid(out, tzid)
        return out

    @property
    def is_all_day(self) -> bool:
        """True for all-day dates."""
        return self.kind is _DATE

    def as_utc(self, default_tz: dt.tzinfo = dt.UTC) -> dt.datetime:
        """This time as an aware UTC datetime (dates at midnight, floating in ``default_tz``)."""
        kind = self.kind
        if kind is _DATE:
            assert self.date is not None
            d = self.date
            return dt.datetime(d.year, d.month, d.day, tzinfo=default_tz).astimezone(dt.UTC)
        assert self.datetime is not None
        if kind is _FLOATING:
            return self.datetime.replace(tzinfo=default_tz).astimezone(dt.UTC)
        return self.datetime.astimezone(dt.UTC)


@attrs.frozen(kw_only=True)
class TimeRange:
    """A half-open window ``[start, end)`` of aware datetimes."""

    start: dt.datetime
    end: dt.datetime

    def __attrs_post_init__(self) -> None:
        _aware("TimeRange.start", self.start)
        _aware("TimeRange.end", self.end)
        if self.end <= self.start:
            raise ValueError("TimeRange.end must be after start")

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        """True when ``[start, end)`` intersects this window."""
        return start < self.end and end > self.start

    def contains(self, instant: dt.datetime) -> bool:
        """True when ``instant`` is inside ``[start, end)``."""
        return self.start <= instant < self.end


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


@attrs.frozen(kw_only=True, init=False)
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
    recurrence: tuple[str, ...] = ()
    series_role: SeriesRole = SeriesRole.SINGLE
    recurring_event_id: str | None = None
    original_start: EventTime | None = None
    created: dt.datetime | None = None
    updated: dt.datetime | None = None
    etag: str | None = None
    #: string key -> value pairs the app stores for correlation (e.g. its own ids)
    properties: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    #: the provider's untouched payload
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)

    def __init__(
        self,
        *,
        id: str,
        calendar_id: str,
        provider: str,
        start: EventTime,
        end: EventTime,
        summary: str | None = None,
        description: str | None = None,
        location: str | None = None,
        ical_uid: str | None = None,
        status: EventStatus = EventStatus.CONFIRMED,
        transparency: Transparency = Transparency.OPAQUE,
        visibility: Visibility = Visibility.DEFAULT,
        organizer: Person | None = None,
        attendees: tuple[Attendee, ...] = (),
        recurrence: Iterable[str] = (),
        series_role: SeriesRole = SeriesRole.SINGLE,
        recurring_event_id: str | None = None,
        original_start: EventTime | None = None,
        created: dt.datetime | None = None,
        updated: dt.datetime | None = None,
        etag: str | None = None,
        properties: Mapping[str, str] | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        # Written out instead of generated by attrs: providers build events by the
        # thousand on the read path, and setting the slots through their descriptors
        # costs about a third of attrs' generated __init__. test_models holds this
        # signature to the fields above.
        _fill_event(
            self,
            id,
            calendar_id,
            provider,
            start,
            end,
            summary,
            description,
            location,
            ical_uid,
            status,
            transparency,
            visibility,
            organizer,
            attendees,
            recurrence,
            series_role,
            recurring_event_id,
            original_start,
            created,
            updated,
            etag,
            properties,
            raw,
        )

    @classmethod
    def from_fields(  # noqa: PLR0917 - positional by design: keywords cost more than the event
        cls,
        id: str,
        calendar_id: str,
        provider: str,
        start: EventTime,
        end: EventTime,
        summary: str | None,
        description: str | None,
        location: str | None,
        ical_uid: str | None,
        status: EventStatus,
        transparency: Transparency,
        visibility: Visibility,
        organizer: Person | None,
        attendees: tuple[Attendee, ...],
        recurrence: Iterable[str],
        series_role: SeriesRole,
        recurring_event_id: str | None,
        original_start: EventTime | None,
        created: dt.datetime | None,
        updated: dt.datetime | None,
        etag: str | None,
        properties: Mapping[str, str] | None,
        raw: Mapping[str, Any] | None,
        /,
    ) -> Event:
        """An event from every field, positional-only, in the order the fields are declared.

        The same event, with the same checks, as ``Event(id=..., ...)``, for providers'
        read hot paths: a call with two dozen keywords costs more than building the
        event does (about 1 µs per event here), and a page of a hundred events pays it a
        hundred times. Everywhere else, use the keyword constructor.
        """
        out = _new(cls)
        _fill_event(
            out,
            id,
            calendar_id,
            provider,
            start,
            end,
            summary,
            description,
            location,
            ical_uid,
            status,
            transparency,
            visibility,
            organizer,
            attendees,
            recurrence,
            series_role,
            recurring_event_id,
            original_start,
            created,
            updated,
            etag,
            properties,
            raw,
        )
        return out


_new = object.__new__


def _fill_event(  # noqa: PLR0917 - private helper
    self: Event,
    id: str,
    calendar_id: str,
    provider: str,
    start: EventTime,
    end: EventTime,
    summary: str | None,
    description: str | None,
    location: str | None,
    ical_uid: str | None,
    status: EventStatus,
    transparency: Transparency,
    visibility: Visibility,
    organizer: Person | None,
    attendees: tuple[Attendee, ...],
    recurrence: Iterable[str],
    series_role: SeriesRole,
    recurring_event_id: str | None,
    original_start: EventTime | None,
    created: dt.datetime | None,
    updated: dt.datetime | None,
    etag: str | None,
    properties: Mapping[str, str] | None,
    raw: Mapping[str, Any] | None,
) -> None:
    # checks, then each slot set through its descriptor (frozen: setattr refuses)
    if (start.kind is _DATE) is not (end.kind is _DATE):
        raise ValueError("start and end must both be all-day or both be timed")
    if not recurring_event_id and (series_role is _INSTANCE or series_role is _EXCEPTION):
        raise ValueError("an instance or exception needs recurring_event_id")
    _e_id(self, id)
    _e_calendar_id(self, calendar_id)
    _e_provider(self, provider)
    _e_start(self, start)
    _e_end(self, end)
    _e_summary(self, summary)
    _e_description(self, description)
    _e_location(self, location)
    _e_ical_uid(self, ical_uid)
    _e_status(self, status)
    _e_transparency(self, transparency)
    _e_visibility(self, visibility)
    _e_organizer(self, organizer)
    _e_attendees(self, attendees)
    _e_recurrence(self, _recurrence(recurrence) if recurrence else ())
    _e_series_role(self, series_role)
    _e_recurring_event_id(self, recurring_event_id)
    _e_original_start(self, original_start)
    _e_created(self, created)
    _e_updated(self, updated)
    _e_etag(self, etag)
    _e_properties(self, _properties(properties) if properties else {})
    _e_raw(self, {} if raw is None else raw)


def _slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """Each named slot's descriptor ``__set__`` (frozen classes refuse ``setattr``)."""
    return tuple(cls.__dict__[name].__set__ for name in names)


(_t_kind, _t_date, _t_datetime, _t_tzid) = _slot_setters(
    EventTime, "kind", "date", "datetime", "tzid"
)


def _new_time(
    cls: type[EventTime],
    kind: TimeKind,
    date: dt.date | None,
    datetime: dt.datetime | None,
    tzid: str | None,
) -> EventTime:
    # the factories' checked values, without the generic __init__'s re-checking
    out = object.__new__(cls)
    _t_kind(out, kind)
    _t_date(out, date)
    _t_datetime(out, datetime)
    _t_tzid(out, tzid)
    return out


(
    _e_id,
    _e_calendar_id,
    _e_provider,
    _e_start,
    _e_end,
    _e_summary,
    _e_description,
    _e_location,
    _e_ical_uid,
    _e_status,
    _e_transparency,
    _e_visibility,
    _e_organizer,
    _e_attendees,
    _e_recurrence,
    _e_series_role,
    _e_recurring_event_id,
    _e_original_start,
    _e_created,
    _e_updated,
    _e_etag,
    _e_properties,
    _e_raw,
) = _slot_setters(Event, *(f.name for f in attrs.fields(Event)))


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


# --------------------------------------------------------------------------- channels, credentials


@attrs.frozen(kw_only=True)
class Channel:
    """A change subscription at a provider (Cronofy channel, Google watch, Graph subscription)."""

    provider: str
    id: str
    callback_url: str
    account_id: str | None = None
    calendar_ids: tuple[str, ...] = ()
    #: provider-specific filters, e.g. ``{"only_managed": "true"}``
    filters: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    #: epoch seconds; None when the provider does not expire channels
    expires_at: int | None = None
    secret: Secret | None = attrs.field(default=None, converter=_opt_secret)
    #: Google's resourceId and similar secondary identifiers
    resource_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)


@attrs.frozen(kw_only=True)
class TokenSet:
    """OAuth tokens for one account. ``expires_at`` is integer epoch seconds."""

    access_token: Secret = attrs.field(converter=_secret)
    refresh_token: Secret | None = attrs.field(default=None, converter=_opt_secret)
    expires_at: int | None = None
    scope: tuple[str, ...] = ()
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    #: non-secret extras from the token response (e.g. Cronofy ``sub``, ``account_id``)
    extra: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def expired(self, now: float, leeway: float = 60.0) -> bool:
        """True when the access token expires within ``leeway`` seconds of ``now``."""
        return self.expires_at is not None and self.expires_at - leeway <= now


class AccountStatus(enum.StrEnum):
    """Whether an account's authorization works."""

    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


@attrs.frozen(kw_only=True)
class Account:
    """One app user's connection to one provider.

    An app user may hold several accounts at once (a legacy Google one and a Cronofy one).
    """

    app_user_id: str
    provider: str
    provider_account_id: str
    status: AccountStatus = AccountStatus.ACTIVE
    email: str | None = None
    id: str | None = None
