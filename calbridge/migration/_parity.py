"""Parity between the legacy view and the target (Cronofy) view of the same calendar.

Both providers front the same native calendar, so every occurrence should appear in both
with the same iCalendar UID. Series are compared occurrence by occurrence (legacy masters
are expanded with ``python-dateutil``; exceptions and cancelled instances override), keyed
by iCalendar UID and original start (an occurrence read without one, as Cronofy reports
them, takes it from the other view's moved occurrence at the same start:
:class:`calbridge._occurrences.OriginalStarts`), field
by field: instants with their zones, all-day dates, summary, location, status,
transparency, attendees and responses. Changes younger than ``grace`` seconds are pending
(Cronofy applies native changes after a delay), not differences.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._occurrences import OriginalStarts, expand_series, stamp
from ..models import Event, EventStatus, EventTime, SeriesRole, TimeKind, TimeRange

__all__ = ["Difference", "Occurrence", "ParityReport", "compare", "occurrences"]


@attrs.frozen(kw_only=True)
class Occurrence:
    """One occurrence in the window, keyed by (iCalUID, original start)."""

    key: tuple[str, str]
    event: Event
    start: EventTime
    end: EventTime


def _uid(event: Event) -> str:
    return event.ical_uid or f"id:{event.id}"


def occurrences(events: Iterable[Event], window: TimeRange) -> dict[tuple[str, str], Occurrence]:
    """Every live occurrence in ``window``, keyed by (iCalUID, original start)."""
    out: dict[tuple[str, str], Occurrence] = {}
    overrides: dict[tuple[str, str], Event] = {}
    masters: list[Event] = []
    for event in events:
        if event.series_role is SeriesRole.MASTER or (
            event.recurrence and event.series_role is SeriesRole.SINGLE
        ):
            masters.append(event)
        elif event.original_start is not None:
            overrides[(_uid(event), stamp(event.original_start))] = event
        elif event.status is not EventStatus.CANCELLED:
            key = (_uid(event), stamp(event.start))
            out[key] = Occurrence(key=key, event=event, start=event.start, end=event.end)
    for master in masters:
        if master.status is EventStatus.CANCELLED:
            continue
        for start, end in expand_series(master, window):
            key = (_uid(master), stamp(start))
            out.setdefault(key, Occurrence(key=key, event=master, start=start, end=end))
    for key, event in overrides.items():
        out.pop(key, None)
        if event.status is not EventStatus.CANCELLED and window.overlaps(
            event.start.as_utc(), event.end.as_utc()
        ):
            out[key] = Occurrence(key=key, event=event, start=event.start, end=event.end)
    return out


@attrs.frozen(kw_only=True)
class Difference:
    """One field that differs for one occurrence."""

    ical_uid: str
    occurrence: str
    field: str
    legacy: Any
    target: Any


@attrs.frozen(kw_only=True)
class ParityReport:
    """Missing / extra / different occurrences between the two views."""

    window: TimeRange
    compared: int
    missing: tuple[tuple[str, str], ...] = ()  #: in legacy, not in the target
    extra: tuple[tuple[str, str], ...] = ()  #: in the target, not in legacy
    different: tuple[Difference, ...] = ()
    pending: int = 0  #: recent changes not yet expected to have propagated

    @property
    def clean(self) -> bool:
        """True when nothing is missing, extra or different."""
        return not (self.missing or self.extra or self.different)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "window": [self.window.start.isoformat(), self.window.end.isoformat()],
            "compared": self.compared,
            "clean": self.clean,
            "pending": self.pending,
            "missing": [list(k) for k in self.missing],
            "extra": [list(k) for k in self.extra],
            "different": [attrs.asdict(d) for d in self.different],
        }


def _time(t: EventTime) -> Any:
    if t.kind is TimeKind.DATE:
        return {"date": t.date.isoformat() if t.date else None}
    return {"instant": t.as_utc().isoformat()}


def _fields(occ: Occurrence) -> dict[str, Any]:
    e = occ.event
    return {
        "start": _time(occ.start),
        "end": _time(occ.end),
        "summary": e.summary or "",
        "location": e.location or "",
        "status": str(e.status),
        "transparency": str(e.transparency),
        "attendees": sorted(
            (a.email.lower(), str(a.response)) for a in e.attendees if not a.resource
        ),
    }


def _recent(event: Event, now: dt.datetime, grace: float) -> bool:
    return event.updated is not None and (now - event.updated).total_seconds() < grace


def compare(
    legacy: Sequence[Event],
    target: Sequence[Event],
    window: TimeRange,
    *,
    now: dt.datetime | None = None,
    grace: float = 600.0,
    ignore: Iterable[str] = (),
    known: Mapping[str, EventTime] | None = None,
) -> ParityReport:
    """Compare two views of one calendar in ``window``.

    ``known`` maps target event ids to the original starts sync gave them before (a
    target occurrence moved since keeps its identity while the legacy view has not caught
    up).
    """
    current = now or dt.datetime.now(dt.UTC)
    # occurrences read without an original start (Cronofy) take the one the other view
    # reports for the same series and start (a moved occurrence), else their start
    starts = OriginalStarts(known)
    starts.learn(legacy)
    starts.learn(target)
    legacy = [starts.fill(e) for e in legacy]
    target = [starts.fill(e) for e in target]
    left, right = occurrences(legacy, window), occurrences(target, window)
    skip = set(ignore)
    missing, extra, pending = [], [], 0
    different: list[Difference] = []
    for key, occ in left.items():
        other = right.get(key)
        if other is None:
            if _recent(occ.event, current, grace):
                pending += 1
            else:
                missing.append(key)
            continue
        a, b = _fields(occ), _fields(other)
        diffs = [f for f in a if f not in skip and a[f] != b[f]]
        if diffs and (_recent(occ.event, current, grace) or _recent(other.event, current, grace)):
            pending += 1
            continue
        different += [
            Difference(ical_uid=key[0], occurrence=key[1], field=f, legacy=a[f], target=b[f])
            for f in diffs
        ]
    for key, occ in right.items():
        if key not in left:
            if _recent(occ.event, current, grace):
                pending += 1
            else:
                extra.append(key)
    return ParityReport(
        window=window,
        compared=len(left.keys() | right.keys()),
        missing=tuple(sorted(missing)),
        extra=tuple(sorted(extra)),
        different=tuple(different),
        pending=pending,
    )
