"""The sync engine: read a calendar's changes, commit them atomically, queue their delivery.

One round reads every page of ``Provider.changes`` from the stored cursor (a full read
when there is none, or when the provider says the cursor expired) into a
spool (``_spool.ChangeSpool``) that holds a bounded number of changes in memory
and spills the rest to an unlinked temporary file. Then ONE write transaction applies
them, a chunk at a time, to the event cache and the id map, moves the cursor, and
enqueues the delivery jobs of the round's batches. Memory stays bounded however large
the calendar: a chunk of changes, one batch, and one id per event. A crash anywhere before
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

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from .. import jobs
from .._serialization import make_converter
from .._tally import SYNC_ROUNDS
from .._tracing import OPERATION, PROVIDER, annotate, span
from ..errors import SyncCursorExpired
from ..models import AccountStatus, Change, ChangeKind, Event, TimeRange
from ..store import Connection, DatabaseError, Store, is_locked, offload, write
from ._batch import ChangeBatch, batch_to_json
from ._idmap import IdMapper
from ._spool import DEFAULT_HOLD, ChangeSpool
from ._view import Item, RoundView, app_identities

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = ["DELIVER_KIND", "SEND_KIND", "CursorMoved", "SyncEngine", "SyncResult", "calendar_key"]

log = logging.getLogger("calbridge.sync")

#: job kinds the engine enqueues
DELIVER_KIND: Final = "deliver_changes"
SEND_KIND: Final = "send_webhook"
#: changes per delivered batch
DEFAULT_BATCH_SIZE: Final = 200
#: changes compared with the cache and written per step of a commit
_CHUNK: Final = 500
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
    changes: ChangeSpool
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
        hold: most changes a round holds in memory while it reads; the rest wait in an
            unlinked temporary file until the commit.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        page_size: int | None = None,
        outbound: bool = False,
        hold: int = DEFAULT_HOLD,
    ) -> None:
        self.runtime = runtime
        self.hold = hold
        self.batch_size = batch_size
        self.page_size = page_size
        self.outbound = outbound
        #: provider reads started, for tests and the benchmark
        self.rounds = 0

    @property
    def store(self) -> Store:
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
        account = await offload(self.store.accounts.get_account, account_id)
        if account is None or account.status is not AccountStatus.ACTIVE:
            why = "account is gone" if account is None else f"account is {account.status}"
            return SyncResult(account_id=account_id, calendar_id=calendar_id, skipped=why)
        await self._check_paused(account.provider)
        start = await offload(self.store.events.get_cursor, account_id, calendar_id)
        provider = rt.provider(account.provider)
        session = rt.session(account)
        self.rounds += 1
        cursor = None if full else start
        try:
            return await self._round(
                provider, session, account, calendar_id, start=start, cursor=cursor, job=job
            )
        except SyncCursorExpired:
            log.info("cursor of %s/%s expired: full resync", account_id, calendar_id)
            return await self._round(
                provider, session, account, calendar_id, start=start, cursor=None, job=job
            )

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
        account = await offload(self.store.accounts.get_account, account_id)
        if account is None or account.status is not AccountStatus.ACTIVE:
            return SyncResult(account_id=account_id, calendar_id=calendar_id, skipped="inactive")
        await self._check_paused(account.provider)
        start = await offload(self.store.events.get_cursor, account_id, calendar_id)
        provider = rt.provider(account.provider)
        self.rounds += 1
        return await self._round(
            provider,
            rt.session(account),
            account,
            calendar_id,
            start=start,
            cursor=None,
            job=job,
            window=window,
        )

    async def _round(
        self,
        provider: Any,
        session: Any,
        account: Any,
        calendar_id: str,
        *,
        start: str | None,
        cursor: str | None,
        job: jobs.Job | None,
        window: TimeRange | None = None,
    ) -> SyncResult:
        """Read from ``cursor`` (a full read of ``window`` when given), then commit (one
        OpenTelemetry span, ``calbridge.sync_round``, with the provider and what changed)."""
        attributes = {PROVIDER: account.provider, OPERATION: "sync_round"}
        with span("calbridge.sync_round", **attributes):
            tally = self.runtime.tally
            try:
                result = await self._spooled_round(
                    provider,
                    session,
                    account,
                    calendar_id,
                    cursor=cursor,
                    start=start,
                    job=job,
                    window=window,
                )
            except SyncCursorExpired:  # the caller reads everything again
                tally.add(SYNC_ROUNDS, account.provider, "cursor_expired")
                raise
            except Exception:
                tally.add(SYNC_ROUNDS, account.provider, "error")
                raise
            tally.add(SYNC_ROUNDS, account.provider, "ok")
            annotate(
                **{
                    "calbridge.sync.full": result.full,
                    "calbridge.sync.pages": result.pages,
                    "calbridge.sync.changed": result.changed,
                }
            )
            return result

    async def _spooled_round(
        self,
        provider: Any,
        session: Any,
        account: Any,
        calendar_id: str,
        *,
        start: str | None,
        cursor: str | None,
        job: jobs.Job | None,
        window: TimeRange | None,
    ) -> SyncResult:
        with ChangeSpool(hold=self.hold) as spool:
            new_cursor, pages, was_full = await self._read(
                provider, session, calendar_id, cursor, window, spool=spool
            )
            rnd = _Round(
                account_id=account.id,
                app_user_id=account.app_user_id,
                provider=account.provider,
                calendar_id=calendar_id,
                start_cursor=start,
                full=was_full or cursor is None,
                changes=spool,
                cursor=None if window is not None else new_cursor,
                window=window,
                pages=pages,
            )
            result: SyncResult = await offload(self._commit, rnd, job)
        return result

    async def _check_paused(self, provider: str) -> None:
        status = await offload(self.store.accounts.provider_status, provider)
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
        *,
        spool: ChangeSpool,
    ) -> tuple[str | None, int, bool]:
        """Every page into ``spool``; (new cursor, pages, whether the read was full)."""
        new_cursor: str | None = None
        pages = 0
        full = cursor is None
        async for page in provider.changes(
            session, calendar_id, cursor, window=window, page_size=self.page_size
        ):
            pages += 1
            full = full or page.full
            spool.add(c for c in page.changes if c.calendar_id == calendar_id)
            if page.cursor is not None:
                new_cursor = page.cursor
        return new_cursor, pages, full

    # ------------------------------------------------------------ commit

    def _commit(self, rnd: _Round, job: jobs.Job | None) -> SyncResult:
        for attempt in range(20):
            try:
                with write(self.store.engine) as conn:
                    return self._apply(conn, rnd, job)
            except DatabaseError as exc:  # SQLITE_BUSY under heavy load
                if attempt == 19 or not is_locked(exc):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _apply(self, conn: Connection, rnd: _Round, job: jobs.Job | None) -> SyncResult:
        store = self.store
        now = self.runtime.clock()
        if job is not None:
            jobs.assert_lease(conn, job, now=now)
        current = store.events.get_cursor(rnd.account_id, rnd.calendar_id, conn=conn)
        if current != rnd.start_cursor:
            raise CursorMoved(f"{rnd.account_id}/{rnd.calendar_id}")
        batches = _Batches(self, conn, rnd, now)
        ids = IdMapper(store, rnd.provider, rnd.app_user_id, rnd.account_id)
        view = RoundView(
            store,
            conn,
            account_id=rnd.account_id,
            app_user_id=rnd.app_user_id,
            calendar_id=rnd.calendar_id,
            now=dt.datetime.fromtimestamp(now, dt.UTC),
        )
        deleted: list[str] = []
        upserted = unchanged = 0
        for raw_chunk in _chunks(rnd.changes.latest(), _CHUNK):
            cached = self._cached(conn, rnd, [c.event_id for c in raw_chunk])
            chunk = view.resolve(raw_chunk, cached)
            upserts: list[Event] = []
            refresh: list[Event] = []
            for change in chunk:
                event_id = change.event_id
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
            if upserts or refresh:
                store.events.upsert_events(rnd.account_id, [*upserts, *refresh], conn=conn)
            ids.map(conn, upserts)
            batches.add(view.upserted(upserts, cached))
            upserted += len(upserts)
        batches.add(view.masters())
        if rnd.full:
            deleted.extend(self._unseen(conn, rnd))
        for i in range(0, len(deleted), _CHUNK):
            gone = deleted[i : i + _CHUNK]
            before = self._cached(conn, rnd, gone)
            store.events.delete_events(rnd.account_id, rnd.calendar_id, gone, conn=conn)
            batches.add(view.deleted(gone, before))
        if rnd.window is None:
            store.events.set_cursor(
                rnd.account_id, rnd.calendar_id, rnd.cursor, full_sync=rnd.full, conn=conn
            )
        batch_ids = batches.finish()
        return SyncResult(
            account_id=rnd.account_id,
            calendar_id=rnd.calendar_id,
            full=rnd.full,
            pages=rnd.pages,
            upserted=upserted,
            deleted=len(deleted),
            unchanged=unchanged,
            cursor=rnd.cursor,
            batch_ids=batch_ids,
        )

    def _unseen(self, conn: Connection, rnd: _Round) -> list[str]:
        """Cached events of the round's calendar (and window) that the full read did not
        return: gone at the provider."""
        return self.store.events.unseen_event_ids(
            rnd.account_id, rnd.calendar_id, rnd.changes, window=rnd.window, conn=conn
        )

    def _cached(self, conn: Connection, rnd: _Round, ids: Sequence[str]) -> dict[str, Any]:
        """The cached payloads of these events of the round's calendar."""
        return self.store.events.cached_payloads(rnd.account_id, rnd.calendar_id, ids, conn=conn)


class _Batches:
    """A round's delivery batches, enqueued as they fill: upserts first, then deletions."""

    def __init__(self, engine: SyncEngine, conn: Connection, rnd: _Round, now: float) -> None:
        self._engine = engine
        self._conn = conn
        self._rnd = rnd
        self._now = now
        self._round_id = uuid.uuid4().hex
        self._items: list[Item] = []
        self._ids: list[str] = []

    def add(self, items: Iterable[Item]) -> None:
        size = self._engine.batch_size
        for item in items:
            self._items.append(item)
            if len(self._items) >= size:
                self._enqueue()

    def finish(self) -> tuple[str, ...]:
        if self._items:
            self._enqueue()
        return tuple(self._ids)

    def _enqueue(self) -> None:
        rnd, chunk, seq = self._rnd, self._items, len(self._ids)
        self._items = []
        identities, keys = app_identities(
            self._engine.store, self._conn, rnd.app_user_id, [v for _k, v in chunk]
        )
        batch = ChangeBatch(
            id=f"chg_{self._round_id}_{seq}",
            account_id=rnd.account_id,
            app_user_id=rnd.app_user_id,
            provider=rnd.provider,
            calendar_id=rnd.calendar_id,
            upserted=tuple(v for k, v in chunk if k == "u"),
            deleted=tuple(v.id for k, v in chunk if k == "d"),
            cursor=rnd.cursor,
            full=rnd.full,
            sequence=seq,
            identities=identities,
            key_identities=keys,
        )
        payload = batch_to_json(batch)
        jobs.enqueue(
            self._conn,
            DELIVER_KIND,
            payload,
            serial_key=f"deliver:{rnd.account_id}:{rnd.calendar_id}",
            now=self._now,
        )
        if self._engine.outbound:
            jobs.enqueue(
                self._conn,
                SEND_KIND,
                payload,
                serial_key=f"webhook:{rnd.account_id}:{rnd.calendar_id}",
                max_attempts=25,
                now=self._now,
            )
        self._ids.append(batch.id)


def _chunks(changes: Iterator[Change], size: int) -> Iterator[list[Change]]:
    chunk: list[Change] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
