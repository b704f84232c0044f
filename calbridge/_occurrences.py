"""Occurrences of recurring series, and one identity for each across providers.

Providers show a series differently: Google's sync reads a master (with its recurrence
lines) and its exceptions; Microsoft Graph's calendar view and Cronofy show occurrences
only. The application must see one thing whatever the route, so calbridge tells it about
*occurrences*: a master is expanded into its occurrences in the occurrence window (Cronofy's
sync window, 42 days back to 201 days ahead), each known by its series and its **original
start** (iCalendar's RECURRENCE-ID): ``<series>@<original start>``.

Google and Graph report an occurrence's original start (``originalStartTime``,
``originalStart``). Cronofy documents no such field, so an occurrence read through Cronofy
is given one by :class:`OriginalStarts`, in this order:

1. the original start this same provider event was given before (a moved occurrence keeps
   its ``event_uid``: it was first seen unmoved, when its start *was* its original start);
2. a copy of the occurrence seen through another provider of the same user that reports it
   (same iCalendar UID, same start: the legacy side's exception says where it came from);
3. its own start (an occurrence nobody saw moved is where its series put it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from typing import Final
from zoneinfo import ZoneInfo

import attrs
from dateutil import rrule

from .models import Event, EventStatus, EventTime, SeriesRole, TimeKind, TimeRange

__all__ = [
    "OCCURRENCE_FUTURE",
    "OCCURRENCE_PAST",
    "OriginalStarts",
    "expand_series",
    "in_series",
    "instances",
    "is_master",
    "occurrence_identity",
    "occurrence_window",
    "stamp",
    "wall_clock",
]

#: how far back and ahead series are expanded for the application (Cronofy's sync window)
OCCURRENCE_PAST: Final = dt.timedelta(days=42)
OCCURRENCE_FUTURE: Final = dt.timedelta(days=201)
#: most occurrences expanded from one master
_MAX: Final = 2000
_IN_SERIES: Final = (SeriesRole.INSTANCE, SeriesRole.EXCEPTION)


def stamp(t: EventTime) -> str:
    """A compact, zone-free form of a start: ``YYYY-MM-DD`` or ``YYYYMMDDTHHMMSSZ``."""
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return t.date.isoformat()
    return t.as_utc().strftime("%Y%m%dT%H%M%SZ")


def occurrence_window(now: dt.datetime) -> TimeRange:
    """The window series are expanded in, around ``now``."""
    return TimeRange(start=now - OCCURRENCE_PAST, end=now + OCCURRENCE_FUTURE)


def is_master(event: Event) -> bool:
    """True for a series definition (it carries recurrence lines)."""
    return event.series_role is SeriesRole.MASTER or (
        bool(event.recurrence) and event.series_role is SeriesRole.SINGLE
    )


def in_series(event: Event) -> bool:
    """True for an occurrence (plain or exception) of a series."""
    return event.series_role in _IN_SERIES or (
        event.recurring_event_id is not None and not event.recurrence
    )


def occurrence_identity(event: Event, base: str | None = None) -> str:
    """The provider-independent identity: ``base`` (default the iCalendar UID), and for an
    occurrence ``@`` its original start (its start while none is known)."""
    root = base or event.ical_uid or f"{event.provider}:{event.id}"
    if not in_series(event):
        return root
    return f"{root}@{stamp(event.original_start or event.start)}"


def wall_clock(t: EventTime) -> dt.datetime:
    """The wall-clock datetime a recurrence rule iterates on."""
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return dt.datetime(t.date.year, t.date.month, t.date.day)
    assert t.datetime is not None
    if t.kind is TimeKind.FLOATING:
        return t.datetime
    return t.datetime.astimezone(ZoneInfo(t.tzid or "UTC"))


def _at(anchor: EventTime, when: dt.datetime) -> EventTime:
    if anchor.kind is TimeKind.DATE:
        return EventTime.all_day(when.date())
    if anchor.kind is TimeKind.FLOATING:
        return EventTime.floating(when.replace(tzinfo=None))
    return EventTime.zoned(when, anchor.tzid)


def expand_series(master: Event, window: TimeRange) -> Iterator[tuple[EventTime, EventTime]]:
    """(start, end) of each occurrence of ``master`` overlapping ``window``, in order.

    The rule runs in the wall clock of the master's start (so a 09:00 series stays at 09:00
    across daylight-saving changes); all-day series step by dates.
    """
    first = wall_clock(master.start)
    length = wall_clock(master.end) - first
    rules = rrule.rrulestr("\n".join(master.recurrence), dtstart=first, forceset=True, unfold=True)
    for n, when in enumerate(rules):
        if n >= _MAX:
            break
        start, end = _at(master.start, when), _at(master.end, when + length)
        begin = start.as_utc()
        if begin >= window.end:
            break
        if window.overlaps(begin, end.as_utc()):
            yield start, end


def _suffix(t: EventTime) -> str:
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return t.date.strftime("%Y%m%d")
    return t.as_utc().strftime("%Y%m%dT%H%M%SZ")


def instances(master: Event, window: TimeRange, *, overridden: Iterable[str] = ()) -> list[Event]:
    """The plain occurrences of ``master`` in ``window`` as events of their own.

    Each is an :attr:`~calbridge.SeriesRole.INSTANCE` with the master's fields, its own
    start and end, ``original_start`` equal to its start and a Google-style id
    ``<masterId>_<original start>``. Occurrences whose original start (as :func:`stamp`)
    is in ``overridden`` (they have an exception of their own) are left out, and so is
    everything of a cancelled master.
    """
    if master.status is EventStatus.CANCELLED or not master.recurrence:
        return []
    skip = set(overridden)
    out: list[Event] = []
    for start, end in expand_series(master, window):
        if stamp(start) in skip:
            continue
        out.append(
            attrs.evolve(
                master,
                id=f"{master.id}_{_suffix(start)}",
                start=start,
                end=end,
                recurrence=(),
                series_role=SeriesRole.INSTANCE,
                recurring_event_id=master.id,
                original_start=start,
                etag=None,
                raw={},
            )
        )
    return out


class OriginalStarts:
    """Gives occurrences that arrive without an original start the one they have.

    ``known`` maps provider event ids to the original start they were given before;
    :meth:`learn` takes events of other providers that report original starts (their moved
    occurrences tell where an occurrence found at a start came from).
    """

    def __init__(self, known: Mapping[str, EventTime] | None = None) -> None:
        self._known: dict[str, EventTime] = dict(known or {})
        self._moved: dict[tuple[str, str], EventTime] = {}

    def learn(self, events: Iterable[Event]) -> None:
        """Remember where the moved occurrences among ``events`` came from."""
        for event in events:
            original = event.original_start
            if original is None or not event.ical_uid or not in_series(event):
                continue
            if stamp(original) != stamp(event.start):
                self._moved[(event.ical_uid, stamp(event.start))] = original

    def fill(self, event: Event) -> Event:
        """``event`` with its original start (unchanged when it has one or is no occurrence)."""
        if event.original_start is not None or not in_series(event):
            return event
        original = self._known.get(event.id)
        if original is None and event.ical_uid:
            original = self._moved.get((event.ical_uid, stamp(event.start)))
        if original is None:
            original = event.start
        moved = stamp(original) != stamp(event.start)
        role = SeriesRole.EXCEPTION if moved else event.series_role
        return attrs.evolve(event, original_start=original, series_role=role)
