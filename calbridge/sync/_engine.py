"""The sync engine: read a calendar's changes, commit them atomically, queue their delivery.

One round reads every page of ``Provider.changes`` from the stored cursor (a full read
when there is none, or when the provider says the cursor expired), keeping the pages in
memory. Then ONE write transaction applies them to the event cache and the id map, moves
the cursor, and enqueues the delivery jobs of the round's batches. A crash anywhere before
that commit leaves the cursor where it was, so the next round reads the same changes
again: nothing is lost, and nothing is applied or delivered twice. The commit checks the
job's fencing token and that the cursor is still the one the round started from, so a
worker that lost its lease, or a concurrent round, writes nothing.

A full round (no cursor, expired cursor, reconciliation) marks every cached event of the
calendar that it did not see as deleted. Changes that do not alter an event (same fields;
a different etag alone only refreshes the cached row) are not delivered, so reconciling an
unchanged calendar writes nothing.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import sqlalchemy as sa

from .. import jobs
from .._serialization import make_converter
from ..errors import SyncCursorExpired
from ..models import AccountStatus, Change, ChangeKind, Event, TimeRange
from ..store import IdMapEntry, schema, write
from ._batch import ChangeBatch, batch_to_json

__all__ = ["DELIVER_KIND", "SEND_KIND", "CursorMoved", "SyncEngine", "SyncResult", "calendar_key"]

log = logging.getLogger("calbridge.sync")

#: job kinds the engine enqueues
DELIVER_KIND: Final = "deliver_changes"
SEND_KIND: Final = "send_webhook"
#: changes per delivered batch
DEFAULT_BATCH_SIZE: Final = 200
_IGNORED_FIELDS: Final = frozenset({"etag", "updated", "raw"})

_converter = make_converter()


def calendar_key(account_id: str, calendar_id: str) -> str:
    """The coalescing and serial key of a calendar's sync jobs."""
    return f"sync:{account_id}:{calendar_id}"


class CursorMoved(Exception):
    """Another round committed first; this round's result is discarded."""


@attrs.frozen(kw_only=True)
class SyncResult:
    """What one round did."""

    account_id: str
    calendar_id: str
    full: bool = False
    pages: int = 0
    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    cursor: str | None = None
    batch_ids: tuple[str, ...] = ()
    skipped: str | None = None

    @property
    def changed(self) -> int:
        """Events the round actually changed in the cache."""
        return self.upserted + self.deleted


def _fingerprint(payload: Any) -> str:
    data = {k: v for k, v in dict(payload).items() if k not in _IGNORED_FIELDS}
    return json.dumps(data, sort_keys=True, default=str)


@attrs.define
class _Round:
    account_id: str
    app_user_id: str
    provider: str
    calendar_id: str
    start_cursor: str | None
    full: bool
    changes: list[Change]
    cursor: str | None
    window: TimeRange | None = None
    pages: int = 0


class SyncEngine:
    """Runs sync rounds for the runtime's accounts.

    Args:
        runtime: the bridge runtime (store, providers, sessions, clock).
        batch_size: most changes per delivered :class:`ChangeBatch`.
        page_size: page size asked of providers (None: theirs).
        outbound: whether committed batches are also sent as outbound webhooks.
    """

    def __init__(
        self,
        runtime: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        page_size: int | None = None,
        outbound: bool = False,
    ) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.page_size = page_size
        self.outbound = outbound
        #: provider reads started, for tests and the benchmark
        self.rounds = 0

    @property
    def store(self) -> Any:
        """The runtime's store."""
        return self.runtime.store

    # ------------------------------------------------------------ rounds

    async def sync(
        self,
        account_id: str,
        calendar_id: str,
        *,
        full: bool = False,
        job: jobs.Job | None = None,
    ) -> SyncResult:
        """One incremental round (or a full one with ``full=True``) of one calendar."""
        rt = self.runtime
        account = await rt.to_thread(self.store.get_account, account_id)
        if account is None or account.status is not AccountStatus.ACTIVE:
            why = "account is gone" if account is None else f"account is {account.status}"
            return SyncResult(account_id=account_id, calendar_id=calendar_id, skipped=why)
        await self._check_paused(account.provider)
        start = await rt.to_thread(self.store.get_cursor, account_id, calendar_id)
        provider = rt.provider(account.provider)
        session = rt.session(account)
        self.rounds += 1
        cursor = None if full else start
        try:
            pages = await self._read(provider, session, calendar_id, cursor, None)
        except SyncCursorExpired:
            log.info("cursor of %s/%s expired: full resync", account_id, calendar_id)
            cursor = None
            pages = await self._read(provider, session, calendar_id, None, None)
        changes, new_cursor, page_count, was_full = pages
        rnd = _Round(
            account_id=account_id,
            app_user_id=account.app_user_id,
            provider=account.provider,
            calendar_id=calendar_id,
            start_cursor=start,
            full=was_full or cursor is None,
            changes=changes,
            cursor=new_cursor,
            pages=page_count,
        )
        result: SyncResult = await rt.to_thread(self._commit, rnd, job)
        return result

    async def reconcile_window(
        self,
        account_id: str,
        calendar_id: str,
        window: TimeRange,
        *,
        job: jobs.Job | None = None,
    ) -> SyncResult:
        """A full read of ``window`` only (e.g. Cronofy's far edge); the cursor is kept."""
        rt = self.runtime
        account = await rt.to_thread(self.store.get_account, account_id)
        if account is None or account.status is not AccountStatus.ACTIVE:
            return SyncResult(account_id=account_id, calendar_id=calendar_id, skipped="inactive")
        await self._check_paused(account.provider)
        start = await rt.to_thread(self.store.get_cursor, account_id, calendar_id)
        provider = rt.provider(account.provider)
        self.rounds += 1
        changes, _cursor, pages, _full = await self._read(
            provider, rt.session(account), calendar_id, None, window
        )
        rnd = _Round(
            account_id=account_id,
            app_user_id=account.app_user_id,
            provider=account.provider,
            calendar_id=calendar_id,
            start_cursor=start,
            full=True,
            changes=changes,
            cursor=None,
            window=window,
            pages=pages,
        )
        result: SyncResult = await rt.to_thread(self._commit, rnd, job)
        return result

    async def _check_paused(self, provider: str) -> None:
        status = await self.runtime.to_thread(self.store.provider_status, provider)
        if status is not None and status.paused:
            now = self.runtime.clock()
            delay = 300.0 if status.paused_until is None else max(1.0, status.paused_until - now)
            raise jobs.RetryLater(delay, f"provider {provider} is paused")

    async def _read(
        self,
        provider: Any,
        session: Any,
        calendar_id: str,
        cursor: str | None,
        window: TimeRange | None,
    ) -> tuple[list[Change], str | None, int, bool]:
        changes: list[Change] = []
        new_cursor: str | None = None
        pages = 0
        full = cursor is None
        async for page in provider.changes(
            session, calendar_id, cursor, window=window, page_size=self.page_size
        ):
            pages += 1
            full = full or page.full
            changes.extend(c for c in page.changes if c.calendar_id == calendar_id)
            if page.cursor is not None:
                new_cursor = page.cursor
        return changes, new_cursor, pages, full

    # ------------------------------------------------------------ commit

    def _commit(self, rnd: _Round, job: jobs.Job | None) -> SyncResult:
        for attempt in range(20):
            try:
                with write(self.store.engine) as conn:
                    return self._apply(conn, rnd, job)
            except sa.exc.OperationalError as exc:  # SQLITE_BUSY under heavy load
                if attempt == 19 or "locked" not in str(exc.orig).lower():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply(self, conn: sa.Connection, rnd: _Round, job: jobs.Job | None) -> SyncResult:
        store = self.store
        now = self.runtime.clock()
        if job is not None:
            jobs.assert_lease(conn, job, now=now)
        current = store.get_cursor(rnd.account_id, rnd.calendar_id, conn=conn)
        if current != rnd.start_cursor:
            raise CursorMoved(f"{rnd.account_id}/{rnd.calendar_id}")
        latest: dict[str, Change] = {}
        for change in rnd.changes:
            latest.pop(change.event_id, None)
            latest[change.event_id] = change
        cached = self._cached(conn, rnd, None if rnd.full else list(latest))
        upserts: list[Event] = []
        refresh: list[Event] = []
        deleted: list[str] = []
        unchanged = 0
        for event_id, change in latest.items():
            if change.kind is ChangeKind.DELETED:
                if event_id in cached:
                    deleted.append(event_id)
                continue
            assert change.event is not None
            payload = _converter.unstructure(change.event)
            before = cached.get(event_id)
            if before is None or _fingerprint(before) != _fingerprint(payload):
                upserts.append(change.event)
            elif before.get("etag") != payload.get("etag"):
                refresh.append(change.event)
            else:
                unchanged += 1
        if rnd.full:
            seen = set(latest)
            deleted.extend(eid for eid in cached if eid not in seen and eid not in set(deleted))
        if upserts or refresh:
            store.upsert_events(rnd.account_id, [*upserts, *refresh], conn=conn)
        if deleted:
            store.delete_events(rnd.account_id, rnd.calendar_id, deleted, conn=conn)
        self._map_ids(conn, rnd, upserts)
        if rnd.window is None:
            store.set_cursor(
                rnd.account_id, rnd.calendar_id, rnd.cursor, full_sync=rnd.full, conn=conn
            )
        batch_ids = self._enqueue_batches(conn, rnd, upserts, deleted, now)
        return SyncResult(
            account_id=rnd.account_id,
            calendar_id=rnd.calendar_id,
            full=rnd.full,
            pages=rnd.pages,
            upserted=len(upserts),
            deleted=len(deleted),
            unchanged=unchanged,
            cursor=rnd.cursor,
            batch_ids=batch_ids,
        )

    def _cached(
        self, conn: sa.Connection, rnd: _Round, ids: Sequence[str] | None
    ) -> dict[str, Any]:
        ec = schema.event_cache.c
        base = sa.select(ec.event_id, ec.payload).where(
            ec.account_id == rnd.account_id, ec.calendar_id == rnd.calendar_id
        )
        out: dict[str, Any] = {}
        if ids is None:
            query = base
            if rnd.window is not None:
                query = query.where(
                    ec.start_at < int(rnd.window.end.timestamp()),
                    ec.end_at > int(rnd.window.start.timestamp()),
                )
            out.update((r.event_id, r.payload) for r in conn.execute(query))
            return out
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            out.update(
                (r.event_id, r.payload) for r in conn.execute(base.where(ec.event_id.in_(chunk)))
            )
        return out

    def _map_ids(self, conn: sa.Connection, rnd: _Round, events: Iterable[Event]) -> None:
        """Keep app idempotency keys pointing at their events (matched by id or iCalUID)."""
        store = self.store
        for event in events:
            entry = store.find_id_by_event(rnd.provider, event.id, conn=conn)
            if entry is None and event.ical_uid:
                candidates = [
                    e
                    for e in store.find_ids_by_ical_uid(
                        event.ical_uid, app_user_id=rnd.app_user_id, conn=conn
                    )
                    if e.provider == rnd.provider and e.account_id in (None, rnd.account_id)
                ]
                entry = candidates[0] if len(candidates) == 1 else None
            if entry is None:
                continue
            updated = IdMapEntry(
                key=entry.key,
                provider=entry.provider,
                app_user_id=entry.app_user_id,
                account_id=entry.account_id or rnd.account_id,
                calendar_id=event.calendar_id,
                event_id=event.id,
                ical_uid=event.ical_uid or entry.ical_uid,
            )
            if updated != entry:
                store.put_id(updated, conn=conn)

    def _enqueue_batches(
        self,
        conn: sa.Connection,
        rnd: _Round,
        upserts: Sequence[Event],
        deleted: Sequence[str],
        now: float,
    ) -> tuple[str, ...]:
        items: list[tuple[str, Any]] = [("u", e) for e in upserts] + [("d", d) for d in deleted]
        if not items:
            return ()
        round_id = uuid.uuid4().hex
        ids: list[str] = []
        serial = f"deliver:{rnd.account_id}:{rnd.calendar_id}"
        for seq, start in enumerate(range(0, len(items), self.batch_size)):
            chunk = items[start : start + self.batch_size]
            batch = ChangeBatch(
                id=f"chg_{round_id}_{seq}",
                account_id=rnd.account_id,
                app_user_id=rnd.app_user_id,
                provider=rnd.provider,
                calendar_id=rnd.calendar_id,
                upserted=tuple(v for k, v in chunk if k == "u"),
                deleted=tuple(v for k, v in chunk if k == "d"),
                cursor=rnd.cursor,
                full=rnd.full,
                sequence=seq,
            )
            payload = batch_to_json(batch)
            jobs.enqueue(conn, DELIVER_KIND, payload, serial_key=serial, now=now)
            if self.outbound:
                jobs.enqueue(
                    conn,
                    SEND_KIND,
                    payload,
                    serial_key=f"webhook:{rnd.account_id}:{rnd.calendar_id}",
                    max_attempts=25,
                    now=now,
                )
            ids.append(batch.id)
        return tuple(ids)
