"""Sync data: cursors, the event cache, and what a sync round reads of them.

Together with the id map (``store.ids``, :mod:`calbridge.store._idmap`) this is the
store's side of "events and identities": what each provider reported, and which app event
it is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container, Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa

from calbridge._serialization import make_converter
from calbridge.models import Event, EventTime, TimeKind, TimeRange

from . import schema as t
from ._base import Repository

__all__ = ["EventRepository", "event_bounds"]

#: all-day and floating times are placed anywhere within +-14 h of UTC
_FLOATING_SLACK: Final = 14 * 3600
#: end bound of open-ended recurring series
_FOREVER: Final = 2**53
#: values per ``IN (...)`` list
_IN_CHUNK: Final = 500

_converter = make_converter()


def _epoch(when: EventTime, *, end: bool) -> int:
    base = int(when.as_utc().timestamp())
    if when.kind is TimeKind.ZONED:
        return base
    return base + _FLOATING_SLACK if end else base - _FLOATING_SLACK


def event_bounds(event: Event) -> tuple[int, int]:
    """Conservative UTC epoch bounds of an event (window queries may over-include)."""
    start = _epoch(event.start, end=False)
    end = _epoch(event.end, end=True)
    if event.recurrence:
        end = _FOREVER
    return start, max(end, start)


def _epoch_of(value: dt.datetime) -> int:
    return int(value.timestamp())


#: what an upsert replaces in a cached event's row
_EVENT_UPDATED = (
    "start_at",
    "end_at",
    "ical_uid",
    "etag",
    "recurring_event_id",
    "payload",
    "updated_at",
)


class EventRepository(Repository):
    """The ``sync_cursors`` and ``event_cache`` tables (``store.events``), and the id map
    lookups of a sync round."""

    # -- sync cursors -------------------------------------------------------------------

    def get_cursor(
        self, account_id: str, calendar_id: str, *, conn: sa.Connection | None = None
    ) -> str | None:
        """The stored sync cursor of a calendar (None: run a full sync)."""
        sc = t.sync_cursors.c
        with self._tx(conn, writing=False) as c:
            value = c.execute(
                sa.select(sc.cursor).where(
                    sc.account_id == account_id, sc.calendar_id == calendar_id
                )
            ).scalar()
        return None if value is None else str(value)

    def set_cursor(
        self,
        account_id: str,
        calendar_id: str,
        cursor: str | None,
        *,
        full_sync: bool = False,
        conn: sa.Connection | None = None,
    ) -> None:
        """Store a calendar's cursor (None clears it); ``full_sync`` stamps the time."""
        now = self.now()
        values: dict[str, Any] = {"cursor": cursor, "updated_at": now}
        if full_sync:
            values["last_full_sync_at"] = now
        with self._tx(conn) as c:
            stmt = self._insert(c, t.sync_cursors).values(
                account_id=account_id, calendar_id=calendar_id, **values
            )
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account_id", "calendar_id"], set_=values
                )
            )

    # -- event cache --------------------------------------------------------------------

    def upsert_events(
        self, account_id: str, events: Iterable[Event], *, conn: sa.Connection | None = None
    ) -> int:
        """Insert or replace cached events; returns how many were written.

        One statement runs for all of them (an executemany), not one per event.
        """
        now = self.now()
        rows = []
        for event in events:
            start, end = event_bounds(event)
            rows.append(
                {
                    "account_id": account_id,
                    "calendar_id": event.calendar_id,
                    "event_id": event.id,
                    "start_at": start,
                    "end_at": end,
                    "ical_uid": event.ical_uid,
                    "etag": event.etag,
                    "recurring_event_id": event.recurring_event_id,
                    "payload": _converter.unstructure(event),
                    "updated_at": now,
                }
            )
        if not rows:
            return 0
        with self._tx(conn) as c:
            insert = self._insert(c, t.event_cache)
            c.execute(
                insert.on_conflict_do_update(
                    index_elements=["account_id", "calendar_id", "event_id"],
                    set_={name: insert.excluded[name] for name in _EVENT_UPDATED},
                ),
                rows,
            )
        return len(rows)

    def delete_events(
        self,
        account_id: str,
        calendar_id: str,
        event_ids: Sequence[str],
        *,
        conn: sa.Connection | None = None,
    ) -> int:
        """Remove cached events (tombstones); returns how many existed."""
        ec = t.event_cache.c
        if not event_ids:
            return 0
        with self._tx(conn) as c:
            result = c.execute(
                t.event_cache.delete().where(
                    ec.account_id == account_id,
                    ec.calendar_id == calendar_id,
                    ec.event_id.in_(list(event_ids)),
                )
            )
        return int(result.rowcount)

    def get_event(
        self, account_id: str, calendar_id: str, event_id: str, *, conn: sa.Connection | None = None
    ) -> Event | None:
        """One cached event."""
        ec = t.event_cache.c
        with self._tx(conn, writing=False) as c:
            payload = c.execute(
                sa.select(ec.payload).where(
                    ec.account_id == account_id,
                    ec.calendar_id == calendar_id,
                    ec.event_id == event_id,
                )
            ).scalar()
        return None if payload is None else _converter.structure(payload, Event)

    def list_events(
        self,
        account_id: str,
        calendar_id: str,
        window: TimeRange | None = None,
        *,
        conn: sa.Connection | None = None,
    ) -> list[Event]:
        """Cached events of a calendar, optionally those whose bounds overlap ``window``.

        All-day and floating events are matched within +-14 h (any viewer's zone) and
        recurring masters always match: filter precisely after expansion.
        """
        ec = t.event_cache.c
        query = (
            sa.select(ec.payload)
            .where(ec.account_id == account_id, ec.calendar_id == calendar_id)
            .order_by(ec.start_at, ec.event_id)
        )
        if window is not None:
            query = query.where(
                ec.start_at < _epoch_of(window.end), ec.end_at > _epoch_of(window.start)
            )
        with self._tx(conn, writing=False) as c:
            payloads = c.execute(query).scalars().all()
        return [_converter.structure(p, Event) for p in payloads]

    def wipe_calendar(
        self, account_id: str, calendar_id: str, *, conn: sa.Connection | None = None
    ) -> int:
        """Drop a calendar's cached events and its cursor (after a 410 / expired cursor)."""
        with self._tx(conn) as c:
            result = c.execute(
                t.event_cache.delete().where(
                    t.event_cache.c.account_id == account_id,
                    t.event_cache.c.calendar_id == calendar_id,
                )
            )
            c.execute(
                t.sync_cursors.delete().where(
                    t.sync_cursors.c.account_id == account_id,
                    t.sync_cursors.c.calendar_id == calendar_id,
                )
            )
        return int(result.rowcount)

    def count_cached(self, *, conn: sa.Connection | None = None) -> int:
        """How many events the cache holds (all accounts)."""
        with self._tx(conn, writing=False) as c:
            return int(
                c.execute(sa.select(sa.func.count()).select_from(t.event_cache)).scalar() or 0
            )

    # -- what a sync round reads (inside its write transaction) ---------------------------

    def calendar_ids(self, account_id: str, *, conn: sa.Connection | None = None) -> list[str]:
        """The calendars of an account that have a cursor row (synced or registered)."""
        sc = t.sync_cursors.c
        with self._tx(conn, writing=False) as c:
            return list(
                c.execute(sa.select(sc.calendar_id).where(sc.account_id == account_id)).scalars()
            )

    def synced_once(self, account_id: str, *, conn: sa.Connection | None = None) -> bool:
        """True when some calendar of the account holds a cursor (one sync completed)."""
        sc = t.sync_cursors.c
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                t.sync_cursors.select().where(sc.account_id == account_id, sc.cursor.is_not(None))
            ).first()
        return row is not None

    def cached_payloads(
        self,
        account_id: str,
        calendar_id: str,
        event_ids: Sequence[str],
        *,
        conn: sa.Connection | None = None,
    ) -> dict[str, Any]:
        """The cached payloads (``Event`` as JSON) of these events: event id -> payload."""
        ec = t.event_cache.c
        base = sa.select(ec.event_id, ec.payload).where(
            ec.account_id == account_id, ec.calendar_id == calendar_id
        )
        out: dict[str, Any] = {}
        with self._tx(conn, writing=False) as c:
            for i in range(0, len(event_ids), _IN_CHUNK):
                chunk = event_ids[i : i + _IN_CHUNK]
                out.update(
                    (r.event_id, r.payload) for r in c.execute(base.where(ec.event_id.in_(chunk)))
                )
        return out

    def unseen_event_ids(
        self,
        account_id: str,
        calendar_id: str,
        seen: Container[str],
        *,
        window: TimeRange | None = None,
        conn: sa.Connection | None = None,
    ) -> list[str]:
        """Cached events of the calendar (whose bounds overlap ``window``) not in ``seen``."""
        ec = t.event_cache.c
        query = sa.select(ec.event_id).where(
            ec.account_id == account_id, ec.calendar_id == calendar_id
        )
        if window is not None:
            query = query.where(
                ec.start_at < _epoch_of(window.end), ec.end_at > _epoch_of(window.start)
            )
        with self._tx(conn, writing=False) as c:
            return [r.event_id for r in c.execute(query) if r.event_id not in seen]

    def exception_payloads(
        self,
        account_id: str,
        calendar_id: str,
        master_id: str,
        *,
        conn: sa.Connection | None = None,
    ) -> list[dict[str, Any]]:
        """The cached payloads of a series master's exceptions."""
        ec = t.event_cache.c
        query = sa.select(ec.payload).where(
            ec.account_id == account_id,
            ec.calendar_id == calendar_id,
            ec.recurring_event_id == master_id,
        )
        with self._tx(conn, writing=False) as c:
            return [r.payload for r in c.execute(query)]

    def occurrence_payloads(
        self,
        account_ids: Sequence[str],
        ical_uids: Iterable[str],
        *,
        conn: sa.Connection | None = None,
    ) -> list[dict[str, Any]]:
        """The cached occurrences (events with a series) of these accounts with one of these
        iCalendar UIDs."""
        ec = t.event_cache.c
        ordered = sorted(ical_uids)
        out: list[dict[str, Any]] = []
        with self._tx(conn, writing=False) as c:
            for i in range(0, len(ordered), _IN_CHUNK):
                query = sa.select(ec.payload).where(
                    ec.account_id.in_(list(account_ids)),
                    ec.ical_uid.in_(ordered[i : i + _IN_CHUNK]),
                    ec.recurring_event_id.is_not(None),
                )
                out.extend(r.payload for r in c.execute(query))
        return out

    def first_by_ical_uid(
        self, account_id: str, ical_uid: str, *, conn: sa.Connection | None = None
    ) -> Event | None:
        """A cached event of the account with this iCalendar UID (series master first)."""
        ec = t.event_cache.c
        with self._tx(conn, writing=False) as c:
            payload = c.execute(
                sa.select(ec.payload)
                .where(ec.account_id == account_id, ec.ical_uid == ical_uid)
                .order_by(ec.recurring_event_id.is_not(None), ec.event_id)
                .limit(1)
            ).scalar()
        return None if payload is None else _converter.structure(payload, Event)

    def app_keys(
        self, app_user_id: str, ical_uids: Iterable[str], *, conn: sa.Connection | None = None
    ) -> dict[str, str]:
        """iCalendar UID -> the app key (the least, if several) the user's id map holds
        for it."""
        m = t.id_map.c
        uids = sorted(set(ical_uids))
        keys: dict[str, str] = {}
        with self._tx(conn, writing=False) as c:
            for i in range(0, len(uids), _IN_CHUNK):
                query = sa.select(m.ical_uid, m.key).where(
                    m.app_user_id == app_user_id, m.ical_uid.in_(uids[i : i + _IN_CHUNK])
                )
                for r in c.execute(query):
                    if r.ical_uid not in keys or r.key < keys[r.ical_uid]:
                        keys[r.ical_uid] = r.key
        return keys
