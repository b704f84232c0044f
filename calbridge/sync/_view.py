"""What a sync round tells the application: occurrences, under the identity the app knows.

The event cache keeps what the provider reports (Google: series masters and exceptions;
Graph and Cronofy: occurrences). The application is told about occurrences on every route
(see :mod:`calbridge._occurrences`), so a user moved from Google to Cronofy sees the same
things before and after:

* an upserted master becomes its occurrences in the occurrence window (those with an
  exception of their own are left to the exception); occurrences the new rule no longer
  has are deletions. Masters are expanded at the end of the round, when every exception
  of the round is in the cache.
* a cancelled exception is a deletion of its occurrence;
* a deleted master is the deletion of each occurrence it had;
* occurrences read without an original start (Cronofy) get one first (:meth:`resolve`).

Every delivered id carries its cross-provider identity (the iCalendar UID, with
``@<original start>`` for an occurrence) and, where the event was written through
calbridge, its app key (:func:`app_identities`); the application feed settles which one
the app knows it by (:mod:`calbridge._feed`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._occurrences import (
    OriginalStarts,
    in_series,
    instances,
    is_master,
    occurrence_identity,
    occurrence_window,
    stamp,
)
from .._serialization import make_converter
from ..models import Change, Event, EventStatus, EventTime
from ..store import Connection, Store

__all__ = ["Item", "RoundView", "app_identities"]

#: ("u", event) for an upsert, ("d", last known event) for a deletion
Item = tuple[str, Event]

_converter = make_converter()


def _event(payload: Mapping[str, Any]) -> Event:
    event: Event = _converter.structure(dict(payload), Event)
    return event


class RoundView:
    """The application's view of one round: built chunk by chunk inside the commit."""

    def __init__(
        self,
        store: Store,
        conn: Connection,
        *,
        account_id: str,
        app_user_id: str,
        calendar_id: str,
        now: dt.datetime,
    ) -> None:
        self._store = store
        self._conn = conn
        self._account = account_id
        self._user = app_user_id
        self._calendar = calendar_id
        self._window = occurrence_window(now)
        #: masters upserted this round: id -> (new master, the cached one before or None)
        self._masters: dict[str, tuple[Event, Event | None]] = {}
        self._others: list[str] | None = None
        #: identities this round upserts: a deletion of the same occurrence under another
        #: provider id (Graph gives a moved occurrence a new id) is no deletion
        self._upserted: set[str] = set()

    # -- original starts ------------------------------------------------------------------

    def resolve(self, chunk: list[Change], cached: Mapping[str, Any]) -> list[Change]:
        """The chunk with every occurrence given its original start (see
        :class:`~calbridge._occurrences.OriginalStarts`)."""
        lacking = [
            c.event
            for c in chunk
            if c.event is not None and c.event.original_start is None and in_series(c.event)
        ]
        if not lacking:
            return chunk
        known: dict[str, EventTime] = {}
        for event in lacking:
            before = cached.get(event.id)
            if before and before.get("original_start"):
                original = _event(before).original_start
                if original is not None:
                    known[event.id] = original
        starts = OriginalStarts(known)
        starts.learn(self._other_copies({e.ical_uid for e in lacking if e.ical_uid}))
        out: list[Change] = []
        for change in chunk:
            filled = starts.fill(change.event) if change.event is not None else None
            if filled is not None and filled is not change.event:
                out.append(
                    Change(
                        kind=change.kind,
                        calendar_id=change.calendar_id,
                        event_id=change.event_id,
                        event=filled,
                        cursor=change.cursor,
                    )
                )
            else:
                out.append(change)
        return out

    def _other_copies(self, uids: set[str]) -> list[Event]:
        """Occurrences of these series cached for the user's other accounts."""
        if not uids:
            return []
        if self._others is None:
            self._others = self._store.accounts.account_ids(
                self._user, excluding=self._account, conn=self._conn
            )
        if not self._others:
            return []
        payloads = self._store.events.occurrence_payloads(self._others, uids, conn=self._conn)
        return [_event(p) for p in payloads]

    # -- items ----------------------------------------------------------------------------

    def upserted(self, events: Iterable[Event], cached: Mapping[str, Any]) -> list[Item]:
        """Items for events the round changed (masters wait for :meth:`masters`)."""
        out: list[Item] = []
        for event in events:
            if is_master(event):
                before = cached.get(event.id)
                old = _event(before) if before else None
                self._masters[event.id] = (
                    event,
                    old if old is not None and is_master(old) else None,
                )
            elif in_series(event) and event.status is EventStatus.CANCELLED:
                out.append(("d", event))
            else:
                out.append(("u", event))
                self._upserted.add(occurrence_identity(event))
        return out

    def masters(self) -> list[Item]:
        """The occurrences of the round's upserted masters, and those they no longer have."""
        out: list[Item] = []
        for master, old in self._masters.values():
            overridden = self._exception_starts(master.id)
            now = instances(master, self._window, overridden=overridden)
            out.extend(("u", e) for e in now)
            self._upserted.update(occurrence_identity(e) for e in now)
            if old is not None:
                kept = {e.id for e in now}
                out.extend(
                    ("d", e)
                    for e in instances(old, self._window, overridden=overridden)
                    if e.id not in kept
                )
        self._masters.clear()
        return out

    def _exception_starts(self, master_id: str) -> set[str]:
        payloads = self._store.events.exception_payloads(
            self._account, self._calendar, master_id, conn=self._conn
        )
        out: set[str] = set()
        for payload in payloads:
            original = payload.get("original_start")
            if original:
                event = _event(payload)
                if event.original_start is not None:
                    out.add(stamp(event.original_start))
        return out

    def deleted(self, event_ids: Sequence[str], cached: Mapping[str, Any]) -> list[Item]:
        """Items for events gone from the provider (``cached``: their rows before)."""
        out: list[Item] = []
        for event_id in event_ids:
            payload = cached.get(event_id)
            if payload is None:
                continue
            event = _event(payload)
            gone = instances(event, self._window) if is_master(event) else [event]
            out.extend(("d", e) for e in gone if occurrence_identity(e) not in self._upserted)
        return out


def app_identities(
    store: Store, conn: Connection, app_user_id: str, events: Sequence[Event]
) -> tuple[dict[str, str], dict[str, str]]:
    """(event id -> cross-provider identity, event id -> app key where one is known).

    The identity is the iCalendar UID, with ``@<original start>`` for an occurrence. The
    key is the app's idempotency key where the event (or its series) was written through
    calbridge, found by iCalendar UID among the user's id map entries, the key's own
    identity then being ``key`` (``key@<original start>`` for an occurrence).
    """
    keys = store.events.app_keys(app_user_id, {e.ical_uid for e in events if e.ical_uid}, conn=conn)
    identities = {e.id: occurrence_identity(e) for e in events}
    by_key = {
        e.id: occurrence_identity(e, keys[e.ical_uid])
        for e in events
        if e.ical_uid and e.ical_uid in keys
    }
    return identities, by_key
