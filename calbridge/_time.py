"""Time values of the domain model: :class:`EventTime` (all-day, floating or zoned) and
:class:`TimeRange`.

Re-exported by :mod:`calbridge.models` and :mod:`calbridge`.
"""

from __future__ import annotations

import datetime as dt
import enum

import attrs

__all__ = ["EventTime", "TimeKind", "TimeRange"]

_UTC = dt.UTC


def _aware(name: str, value: dt.datetime) -> None:
    tzinfo = value.tzinfo
    if tzinfo is _UTC:  # the common case, aware without asking (utcoffset() is costly)
        return
    if tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


class TimeKind(enum.StrEnum):
    """How an :class:`EventTime` is anchored."""

    DATE = "date"  #: an all-day date; as an event end it is exclusive
    FLOATING = "floating"  #: a wall-clock time in whatever zone the viewer is in
    ZONED = "zoned"  #: an instant, displayed in an IANA time zone


# an enum member read through its class costs a lookup each time; these are read per event
_DATE = TimeKind.DATE
_FLOATING = TimeKind.FLOATING
_ZONED = TimeKind.ZONED


def _instant(value: dt.datetime | None) -> dt.datetime | None:
    """What a time's ``datetime`` compares by: the UTC instant when aware (Python's
    inter-zone equality is False for times in a DST gap or fold, PEP 495), else itself."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(_UTC)


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
    #: naive for FLOATING; timezone-aware (any offset) for ZONED. Zoned times compare (and
    #: hash) by instant: the same instant with another tzinfo object (a fixed offset read
    #: back from storage, a time in a DST gap or fold) is the same time
    datetime: dt.datetime | None = attrs.field(default=None, eq=_instant)
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
        return cls(kind=_DATE, date=date)

    @classmethod
    def floating(cls, local: dt.datetime) -> EventTime:
        """A wall-clock time with no zone."""
        if not isinstance(local, dt.datetime) or local.tzinfo is not None:
            raise ValueError("a floating EventTime takes a naive datetime")
        return cls(kind=_FLOATING, datetime=local)

    @classmethod
    def zoned(cls, instant: dt.datetime, tzid: str | None = None) -> EventTime:
        """An instant shown in ``tzid`` (defaults to the datetime's own zone key, else UTC)."""
        if instant.tzinfo is not _UTC:  # UTC, the usual case, is aware: no call needed
            _aware("instant", instant)
        if tzid is None:
            tzid = getattr(instant.tzinfo, "key", None) or "UTC"
        elif not tzid:
            raise ValueError("a zoned EventTime has an aware datetime and a tzid")
        return cls(kind=_ZONED, datetime=instant, tzid=tzid)

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
