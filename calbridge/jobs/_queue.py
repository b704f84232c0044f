"""JobQueue: the queue's operations, each in a short write transaction of its own.

``BEGIN IMMEDIATE`` on SQLite, row locks with ``SKIP LOCKED`` on PostgreSQL; transient
failures (``SQLITE_BUSY``, serialization failures, deadlocks) are retried, never raised.
On PostgreSQL "now" is the database's clock, read in the transaction that uses it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

from ..store import Connection, DatabaseError, Engine, is_postgres, read, write
from ..store import jobs as ops
from ..store.jobs import DONE, MERGED, QUEUED
from ._model import DEFAULT_QUEUE, Clock, Job

__all__ = ["DEFAULT_RETENTION", "PRUNE_BATCH", "JobQueue"]

log = logging.getLogger("calbridge.jobs")

T = TypeVar("T")

#: give up on a write transaction after this many busy / serialization retries
_TX_RETRIES: Final = 50
#: how long finished (``done``, ``merged``) jobs are kept by default: 7 days
DEFAULT_RETENTION: Final = timedelta(days=7)
#: rows deleted per pruning transaction
PRUNE_BATCH: Final = 1000


def _ms(t: float) -> int:
    return round(t * 1000)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _system_clock() -> float:
    return time.time()


class JobQueue:
    """The job queue on one store engine.

    Each method runs one short write transaction (retried on ``SQLITE_BUSY``, PostgreSQL
    serialization failures and deadlocks). To enqueue inside your own transaction, call
    :func:`calbridge.jobs.enqueue` with your connection instead.

    ``clock``: None (or ``time.time``) means real time: on PostgreSQL the *database's*
    clock (``clock_timestamp()``, read in the transaction that uses it), so leases,
    run times and schedules agree between workers on hosts with skewed clocks; on SQLite
    (one host) the system clock. Any other callable (epoch seconds; tests inject a fake
    one) is used for everything instead.

    Example::

        queue = JobQueue(engine)
        queue.enqueue("sync", {"account": "a1", "calendar": "c1"}, coalesce_key="sync:a1:c1")
    """

    def __init__(self, engine: Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        real = clock is None or clock is time.time
        #: the clock this process reads (the system clock unless one was injected)
        self.clock: Clock = _system_clock if real else clock  # type: ignore[assignment]
        #: True when lease times come from the database (PostgreSQL, real time)
        self.database_clock = real and is_postgres(engine)
        self._wakers: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"<JobQueue {self.engine.dialect.name}>"

    def now(self, conn: Connection) -> float:
        """Epoch seconds for a transaction on ``conn`` (see the class docstring)."""
        return ops.db_now(conn) if self.database_clock else self.clock()

    # ------------------------------------------------------------ wake-ups

    def add_waker(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(queue_name)`` after this object commits a job that is due now.

        How an idle worker of this process learns of work at once (SQLite has no
        LISTEN/NOTIFY; on PostgreSQL it complements them). ``fn`` may run on any thread.
        """
        self._wakers.append(fn)

    def remove_waker(self, fn: Callable[[str], None]) -> None:
        """Undo :meth:`add_waker`."""
        with contextlib.suppress(ValueError):
            self._wakers.remove(fn)

    def _wake(self, queue: str) -> None:
        for fn in list(self._wakers):
            try:
                fn(queue)
            except Exception:  # a waker never breaks the caller
                log.debug("a job-queue waker failed", exc_info=True)

    # ------------------------------------------------------------ operations

    def transact(self, fn: Callable[[Connection], T], *, retry_integrity: bool = False) -> T:
        """Run ``fn(conn)`` in a write transaction, retrying transient lock failures."""
        for attempt in range(_TX_RETRIES):
            try:
                with write(self.engine) as conn:
                    return fn(conn)
            except DatabaseError as exc:
                transient = ops.is_transient(exc, integrity=retry_integrity)
                if attempt + 1 >= _TX_RETRIES or not transient:
                    raise
                cause = getattr(exc, "orig", exc)
                log.debug("retrying a job-queue transaction after %s", type(cause).__name__)
                time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)))
        raise AssertionError("unreachable")  # pragma: no cover

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """:func:`calbridge.jobs.enqueue` in a transaction of its own."""
        due: list[bool] = []

        def run(conn: Connection) -> int:
            now = self.now(conn)
            run_at = options.get("run_at")
            due[:] = [run_at is None or ops.when(run_at, now) <= now]
            return ops.enqueue(conn, kind, payload, now=now, **options)

        job_id = self.transact(run)
        if due and due[0]:
            self._wake(str(options.get("queue", DEFAULT_QUEUE)))
        return job_id

    def may_claim(self, *, kinds: Sequence[str], queues: Sequence[str] = (DEFAULT_QUEUE,)) -> bool:
        """One read-only statement: could a claim find anything? (How idle workers poll.)"""
        now = None if self.database_clock else self.clock()
        with read(self.engine) as conn:
            return ops.may_claim(conn, kinds=kinds, queues=queues, now=now)

    def claim(
        self,
        *,
        owner: str,
        kinds: Sequence[str],
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        lease: float,
    ) -> Job | None:
        """Claim one runnable job (see :func:`claim`)."""
        got = self.claim_many(owner=owner, kinds=kinds, queues=queues, lease=lease, limit=1)
        return got[0] if got else None

    def claim_many(
        self,
        *,
        owner: str,
        kinds: Sequence[str],
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        lease: float,
        limit: int,
    ) -> list[Job]:
        """Claim up to ``limit`` runnable jobs in one transaction (see ``claim_many``).

        A read-only pre-check comes first: an idle poll is one statement and takes no
        lock (SQLite has one write lock, and the webhook receiver needs it).
        """
        if not self.may_claim(kinds=kinds, queues=queues):
            return []
        # a serial-key race between PostgreSQL workers ends in a unique violation: retry
        return self.transact(
            lambda c: ops.claim_many(
                c,
                owner=owner,
                kinds=kinds,
                queues=queues,
                lease=lease,
                now=self.now(c),
                limit=limit,
            ),
            retry_integrity=True,
        )

    def complete_and_claim(
        self,
        job: Job,
        *,
        owner: str,
        kinds: Sequence[str],
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        lease: float,
    ) -> tuple[bool, Job | None]:
        """Acknowledge ``job`` and claim the next one in one transaction.

        Returns (acked, next job or None); a worker that lost the lease still gets a job.
        """

        def run(conn: Connection) -> tuple[bool, Job | None]:
            now = self.now(conn)
            acked = ops.complete(conn, job, now=now)
            return acked, ops.claim(
                conn, owner=owner, kinds=kinds, queues=queues, lease=lease, now=now
            )

        return self.transact(run, retry_integrity=True)

    def heartbeat(self, job: Job, *, lease: float) -> bool:
        """Extend ``job``'s lease; False when it was lost."""
        return self.transact(lambda c: ops.heartbeat(c, job, lease=lease, now=self.now(c)))

    def assert_lease(self, conn: Connection, job: Job) -> None:
        """:func:`assert_lease` with this queue's clock."""
        ops.assert_lease(conn, job, now=self.now(conn))

    def complete(self, job: Job) -> bool:
        """Acknowledge success; False when the lease was lost (nothing changed)."""
        return self.transact(lambda c: ops.complete(c, job, now=self.now(c)))

    def fail(
        self,
        job: Job,
        *,
        error: str,
        retry_at: float | None = None,
        retry_in: float | None = None,
        counts: bool = True,
    ) -> str | None:
        """Record a failure (see :func:`fail`).

        The retry is due at ``retry_at`` (epoch seconds), or ``retry_in`` seconds from now
        by the queue's clock (the database's on PostgreSQL); neither: the job goes dead.
        """

        def run(conn: Connection) -> str | None:
            now = self.now(conn)
            at = now + retry_in if retry_in is not None else retry_at
            return ops.fail(conn, job, error=error, retry_at=at, counts=counts, now=now)

        state = self.transact(run, retry_integrity=True)
        if state == QUEUED and retry_in is not None and retry_in <= 0:
            self._wake(job.queue)
        return state

    def release(self, job: Job) -> bool:
        """Give a running job back (see :func:`release`)."""
        released = self.transact(lambda c: ops.release(c, job, now=self.now(c)))
        if released:
            self._wake(job.queue)
        return released

    def ensure_schedule(
        self, name: str, kind: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Create or update a recurring job (see :func:`ensure_schedule`)."""
        self.transact(
            lambda c: ops.ensure_schedule(c, name, kind, payload, now=self.now(c), **options)
        )

    def enqueue_due_schedules(self) -> list[int]:
        """Enqueue the recurring jobs that are due (see :func:`enqueue_due_schedules`)."""
        ids = self.transact(
            lambda c: ops.enqueue_due_schedules(c, now=self.now(c)), retry_integrity=True
        )
        if ids:
            self._wake("")
        return ids

    # ------------------------------------------------------------ inspection

    def get(self, job_id: int) -> Job | None:
        """One job by id."""
        with read(self.engine) as conn:
            return ops.get_job(conn, job_id)

    def jobs(
        self, *, states: Iterable[str] | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs by id, optionally filtered by state and kind."""
        with read(self.engine) as conn:
            return ops.list_jobs(conn, states=states, kind=kind, limit=limit)

    def stats(self) -> dict[str, dict[str, int]]:
        """Job counts: queue -> state -> count (states with no jobs are left out)."""
        with read(self.engine) as conn:
            return ops.job_stats(conn)

    def retry_dead(self, job_id: int) -> bool:
        """Queue a dead job again with a fresh attempt budget.

        False when it is not dead, or when a job of its coalesce key is already queued.
        """
        return self.transact(
            lambda c: ops.requeue_dead(c, job_id, now=self.now(c)), retry_integrity=False
        )

    def prune(
        self,
        *,
        older_than: float | timedelta,
        states: Sequence[str] = (DONE, MERGED),
        batch: int = PRUNE_BATCH,
    ) -> int:
        """Delete jobs in ``states`` (default ``done`` and ``merged``; ``dead`` may be
        named) finished more than ``older_than`` ago; returns how many.

        At most ``batch`` rows per transaction, so a huge backlog never holds a long one.
        Workers run it on a schedule (see :class:`calbridge.jobs.Worker`'s ``retention``).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        age = _seconds(older_than)
        total = 0
        while True:
            deleted = self.transact(
                lambda c: ops.prune_batch(
                    c, states=states, before_ms=_ms(self.now(c) - age), batch=batch
                )
            )
            total += deleted
            if deleted < batch:
                return total
