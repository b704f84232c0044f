"""Expanding native series into occurrences, for views that return single instances."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs
from dateutil import rrule

from .._occurrences import wall_clock
from ..models import EventStatus, EventTime, TimeKind

if TYPE_CHECKING:  # _model imports this module to build an event's single occurrence
    from ._model import NativeEvent

__all__ = ["Occurrence", "expand"]

_MAX_OCCURRENCES = 5000


@attrs.frozen(kw_only=True)
class Occurrence:
    """One occurrence in a window: a single event, or an instance/exception of a series."""

    event: NativeEvent  #: the single event, the exception, or (for plain instances) the master
    start: EventTime
    end: EventTime
    #: set for occurrences of a series
    original_start: EventTime | None = None
    #: Google-style instance id ``<masterId>_<YYYYMMDDTHHMMSSZ>`` (``_<YYYYMMDD>`` all-day)
    instance_id: str = ""

    @property
    def recurring(self) -> bool:
        """True for an occurrence of a series."""
        return self.original_start is not None

    @functools.cached_property
    def start_utc(self) -> dt.datetime:
        """``start.as_utc()``, computed once (the event's own when it is the same time)."""
        return self.event.start_utc if self.start is self.event.start else self.start.as_utc()

    @functools.cached_property
    def end_utc(self) -> dt.datetime:
        """``end.as_utc()``, computed once."""
        return self.event.end_utc if self.end is self.event.end else self.end.as_utc()


def _instance_suffix(t: EventTime) -> str:
    if t.kind is TimeKind.DATE:
        assert t.date is not None
        return t.date.strftime("%Y%m%d")
    return t.as_utc().strftime("%Y%m%dT%H%M%SZ")


def _shift(t: EventTime, anchor: dt.datetime) -> EventTime:
    if t.kind is TimeKind.DATE:
        return EventTime.all_day(anchor.date())
    if t.kind is TimeKind.FLOATING:
        return EventTime.floating(anchor.replace(tzinfo=None))
    assert t.tzid is not None
    return EventTime.zoned(anchor, t.tzid)


def expand(
    events: Iterable[NativeEvent], window_start: dt.datetime, window_end: dt.datetime
) -> list[Occurrence]:
    """Occurrences of live ``events`` overlapping ``[window_start, window_end)``, by start.

    Masters are expanded with their RRULE/EXDATE/RDATE lines in their start's zone;
    exceptions replace (or, when cancelled, remove) the occurrence at their original start.
    """
    live = [e for e in events if not e.deleted]
    exceptions: dict[tuple[str, dt.datetime], NativeEvent] = {}
    for e in live:
        if e.recurring_event_id is not None and e.original_start is not None:
            exceptions[(e.recurring_event_id, e.original_start.as_utc())] = e
    out: list[Occurrence] = []
    for e in live:
        if e.recurring_event_id is not None:
            continue  # rendered through its master
        if not e.recurrence:
            if e.start_utc < window_end and e.end_utc > window_start:
                out.append(e.single_occurrence)
            continue
        first = wall_clock(e.start)
        duration = wall_clock(e.end) - first
        rule = rrule.rrulestr("\n".join(e.recurrence), dtstart=first, forceset=True)
        for n, when in enumerate(rule):
            if n >= _MAX_OCCURRENCES:
                break
            start = _shift(e.start, when)
            end = _shift(e.end, when + duration)
            start_utc = start.as_utc()
            if start_utc >= window_end:
                break
            exc = exceptions.get((e.id, start_utc))
            if exc is not None:
                if exc.status is EventStatus.CANCELLED:
                    continue
                if exc.start_utc < window_end and exc.end_utc > window_start:
                    out.append(
                        Occurrence(
                            event=exc,
                            start=exc.start,
                            end=exc.end,
                            original_start=start,
                            instance_id=exc.id,
                        )
                    )
                continue
            if start_utc < window_end and end.as_utc() > window_start:
                out.append(
                    Occurrence(
                        event=e,
                        start=start,
                        end=end,
                        original_start=start,
                        instance_id=f"{e.id}_{_instance_suffix(start)}",
                    )
                )
    # exceptions moved into the window from an original start outside it
    seen = {(o.event.id, o.start_utc) for o in out} if exceptions else set()
    for exc in exceptions.values():
        if exc.status is EventStatus.CANCELLED or (exc.id, exc.start_utc) in seen:
            continue
        if exc.start_utc < window_end and exc.end_utc > window_start:
            out.append(
                Occurrence(
                    event=exc,
                    start=exc.start,
                    end=exc.end,
                    original_start=exc.original_start,
                    instance_id=exc.id,
                )
            )
    out.sort(key=lambda o: (o.start_utc, o.instance_id))
    return out
