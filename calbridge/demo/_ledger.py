"""The demo's bookkeeping: what the application was told, against what the world holds.

:class:`AppLedger` is the application's own copy of its users' calendars, built only from
change batches and keyed the way an application should key it: by the batch's identity of
each id (``ChangeBatch.identity``). It counts every delivery that told the app nothing new
(an upsert equal to what it holds, a deletion of something it does not hold): those are
changes delivered twice.

:func:`world_truth` expands the users' native calendars into occurrences, the same unit the
application is told about, so :func:`compare` can say exactly which occurrences the app is
missing, holds stale, or holds although they are gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import attrs

from .._occurrences import occurrence_window, stamp
from ..models import Event

__all__ = ["AppLedger", "Held", "compare", "world_truth"]

#: (iCalendar UID, original start stamp or "" for a single event)
Key = tuple[str, str]


@attrs.frozen
class Held:
    """What the app holds for one occurrence or event."""

    summary: str
    start: str
    end: str


@attrs.define
class AppLedger:
    """The application's copy, per user and identity, built from batches."""

    #: (user, identity) -> (key into the world, what the app holds)
    live: dict[tuple[str, str], tuple[Key, Held]] = attrs.field(factory=dict)
    batches: int = 0
    #: upserts and deletions the app received
    items: int = 0
    #: deliveries that told the app nothing new, as (user, identity, what)
    twice: list[tuple[str, str, str]] = attrs.field(factory=list)

    async def __call__(self, batch: Any) -> None:
        self.batches += 1
        user = batch.app_user_id or "?"
        for event in batch.upserted:
            self.items += 1
            ident = batch.identity(event.id)
            now = (_key(event), _held(event))
            if self.live.get((user, ident)) == now:
                self.twice.append((user, ident, f"upsert {event.summary!r}"))
            self.live[(user, ident)] = now
        for event_id in batch.deleted:
            self.items += 1
            ident = batch.identity(event_id)
            if self.live.pop((user, ident), None) is None:
                self.twice.append((user, ident, "deletion"))

    def held(self, user: str) -> dict[Key, list[Held]]:
        """What the app holds for ``user``, by world key (a list: more than one is a
        duplicate)."""
        out: dict[Key, list[Held]] = {}
        for (u, _ident), (key, held) in self.live.items():
            if u == user:
                out.setdefault(key, []).append(held)
        return out


def _key(event: Event) -> Key:
    uid = event.ical_uid or f"{event.provider}:{event.id}"
    if event.original_start is not None:
        return (uid, stamp(event.original_start))
    if event.recurring_event_id is not None:
        return (uid, stamp(event.start))
    return (uid, "")


def _held(event: Event) -> Held:
    return Held(summary=event.summary or "", start=stamp(event.start), end=stamp(event.end))


def world_truth(events: Iterable[Any], now: dt.datetime) -> dict[Key, Held]:
    """The live occurrences of native events (a calendar's), as the app should hold them."""
    from ..sandbox._recurrence import expand

    window = occurrence_window(now)
    natives = list(events)
    out: dict[Key, Held] = {}
    masters = {e.id for e in natives if e.recurrence}
    # single events count whatever their time; series occurrences within the window
    for e in natives:
        if not e.recurrence and e.recurring_event_id is None:
            out[(e.ical_uid, "")] = Held(e.summary or "", stamp(e.start), stamp(e.end))
    series = [e for e in natives if e.id in masters or e.recurring_event_id in masters]
    for occ in expand(series, window.start, window.end):
        assert occ.original_start is not None
        key = (occ.event.ical_uid, stamp(occ.original_start))
        out[key] = Held(occ.event.summary or "", stamp(occ.start), stamp(occ.end))
    return out


def compare(user: str, truth: dict[Key, Held], held: dict[Key, list[Held]]) -> list[str]:
    """What the app gets wrong for ``user``: missing, stale, gone-but-held, doubled."""
    out: list[str] = []
    for key, want in sorted(truth.items()):
        have = held.get(key, [])
        if not have:
            out.append(f"{user}: missing {want.summary!r} {key[1] or want.start}")
        elif len(have) > 1:
            out.append(f"{user}: held {len(have)} times {want.summary!r} {key[1]}")
        elif have[0] != want:
            out.append(f"{user}: stale {have[0]} instead of {want}")
    for key, have in sorted(held.items()):
        if key not in truth:
            out.append(f"{user}: still holds {have[0].summary!r} {key[1] or have[0].start}")
    return out
