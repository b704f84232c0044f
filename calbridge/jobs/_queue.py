"""JobQueue: the queue's operations, each in a short write transaction of its own.

``BEGIN IMMEDIATE`` on SQLite, row locks with ``SKIP LOCKED`` on PostgreSQL; transient
failures (``SQLITE_BUSY``, serialization failures, deadlocks) are retried, never raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

import sqlalchemy as sa

from ..store import is_sqlite, read, write
from . import _ops as ops
from ._model import DEFAULT_QUEUE, Clock, Job
from ._ops import JOB_COLUMNS, row_to_job
from ._schema import DEAD, DONE, MERGED, QUEUED, jobs

__all__ = ["JobQueue"]

log = logging.getLogger("calbridge.jobs")

T = TypeVar("T")

#: give up on a write transaction after this many busy / serialization retries
_TX_RETRIES: Final = 50


def _ms(t: float) -> int:
    return round(t * 1000)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _retryable(exc: sa.exc.DBAPIError, *, integrity: bool) -> bool:
    if isinstance(exc, sa.exc.IntegrityError):
        return integrity
    orig = exc.orig
    name = str(getattr(orig, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    text = str(orig).lower()
    if "database is locked" in text or "database table is locked" in text:
        return True
    # PostgreSQL: serialization_failure, deadlock_detected, lock_not_available
    return getattr(orig, "sqlstate", None) in {"40001", "40P01", "55P03"}


class JobQueue:
    """The job queue on one store engine, with an injectable clock.

    Each method runs one short write transaction (retried on ``SQLITE_BUSY``, PostgreSQL
    serialization failures and deadlocks). To enqueue inside your own transaction, call
    :func:`calbridge.jobs.enqueue` with your connection instead.

    Example::

        queue = JobQueue(engine)
        queue.enqueue("sync", {"account": "a1", "calendar": "c1"}, coalesce_key="sync:a1:c1")
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def __repr__(self) -> str:
        return f"<JobQueue {self.engine.dialect.name}>"

    def transact(self, fn: Callable[[sa.Connection], T], *, retry_integrity: bool = False) -> T:
        """Run ``fn(conn)`` in a write transaction, retrying transient lock failures."""
        for attempt in range(_TX_RETRIES):
            try:
                with write(self.engine) as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                if attempt + 1 >= _TX_RETRIES or not _retryable(exc, integrity=retry_integrity):
                    raise
                log.debug("retrying a job-queue transaction after %s", type(exc.orig).__name__)
                time.sleep(min(0.5, 0.005 * 2 ** min(attempt, 7)))
        raise AssertionError("unreachable")  # pragma: no cover

    def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """:func:`calbridge.jobs.enqueue` in a transaction of its own."""
        now = self.clock()
        return self.transact(lambda c: ops.enqueue(c, kind, payload, now=now, **options))

    def claim(
        self,
        *,
        owner: str,
        kinds: Sequence[str],
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        lease: float,
    ) -> Job | None:
        """Claim one runnable job (see :func:`claim`)."""
        now = self.clock()
        if is_sqlite(self.engine):
            # idle polls read first: SQLite has one write lock, the webhook receiver needs it
            with read(self.engine) as conn:
                if not ops.may_claim(conn, kinds=kinds, queues=queues, now=now):
                    return None
        # a serial-key race between PostgreSQL workers ends in a unique violation: retry
        return self.transact(
            lambda c: ops.claim(c, owner=owner, kinds=kinds, queues=queues, lease=lease, now=now),
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
        now = self.clock()

        def run(conn: sa.Connection) -> tuple[bool, Job | None]:
            acked = ops.complete(conn, job, now=now)
            return acked, ops.claim(
                conn, owner=owner, kinds=kinds, queues=queues, lease=lease, now=now
            )

        return self.transact(run, retry_integrity=True)

    def heartbeat(self, job: Job, *, lease: float) -> bool:
        """Extend ``job``'s lease; False when it was lost."""
        now = self.clock()
        return self.transact(lambda c: ops.heartbeat(c, job, lease=lease, now=now))

    def assert_lease(self, conn: sa.Connection, job: Job) -> None:
        """:func:`assert_lease` with this queue's clock."""
        ops.assert_lease(conn, job, now=self.clock())

    def complete(self, job: Job) -> bool:
        """Acknowledge success; False when the lease was lost (nothing changed)."""
        now = self.clock()
        return self.transact(lambda c: ops.complete(c, job, now=now))

    def fail(
        self, job: Job, *, error: str, retry_at: float | None, counts: bool = True
    ) -> str | None:
        """Record a failure (see :func:`fail`)."""
        now = self.clock()
        return self.transact(
            lambda c: ops.fail(c, job, error=error, retry_at=retry_at, counts=counts, now=now),
            retry_integrity=True,
        )

    def release(self, job: Job) -> bool:
        """Give a running job back (see :func:`release`)."""
        now = self.clock()
        return self.transact(lambda c: ops.release(c, job, now=now))

    def ensure_schedule(
        self, name: str, kind: str, payload: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Create or update a recurring job (see :func:`ensure_schedule`)."""
        now = self.clock()
        self.transact(lambda c: ops.ensure_schedule(c, name, kind, payload, now=now, **options))

    def enqueue_due_schedules(self) -> list[int]:
        """Enqueue the recurring jobs that are due (see :func:`enqueue_due_schedules`)."""
        now = self.clock()
        return self.transact(lambda c: ops.enqueue_due_schedules(c, now=now), retry_integrity=True)

    # ------------------------------------------------------------ inspection

    def get(self, job_id: int) -> Job | None:
        """One job by id."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(*JOB_COLUMNS).where(jobs.c.id == job_id)).first()
        return None if row is None else row_to_job(row._mapping)

    def jobs(
        self, *, states: Iterable[str] | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs by id, optionally filtered by state and kind."""
        q = sa.select(*JOB_COLUMNS).order_by(jobs.c.id).limit(limit)
        if states is not None:
            q = q.where(jobs.c.state.in_(list(states)))
        if kind is not None:
            q = q.where(jobs.c.kind == kind)
        with read(self.engine) as conn:
            return [row_to_job(r._mapping) for r in conn.execute(q)]

    def stats(self) -> dict[str, dict[str, int]]:
        """Job counts: queue -> state -> count (states with no jobs are left out)."""
        q = sa.select(jobs.c.queue, jobs.c.state, sa.func.count()).group_by(
            jobs.c.queue, jobs.c.state
        )
        out: dict[str, dict[str, int]] = {}
        with read(self.engine) as conn:
            for queue, state, count in conn.execute(q):
                out.setdefault(queue, {})[state] = int(count)
        return out

    def retry_dead(self, job_id: int) -> bool:
        """Queue a dead job again with a fresh attempt budget.

        False when it is not dead, or when a job of its coalesce key is already queued.
        """
        now_ms = _ms(self.clock())

        def run(conn: sa.Connection) -> bool:
            key = conn.execute(sa.select(jobs.c.coalesce_key).where(jobs.c.id == job_id)).scalar()
            if (
                key is not None
                and conn.execute(
                    sa.select(jobs.c.id).where(jobs.c.coalesce_key == key, jobs.c.state == QUEUED)
                ).first()
            ):
                return False  # a job of the same coalesce key is queued: it does the work
            res = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == DEAD)
                .values(state=QUEUED, attempts=0, run_at_ms=now_ms, finished_ms=None)
            )
            return res.rowcount == 1

        return self.transact(run, retry_integrity=False)

    def prune(self, *, older_than: float | timedelta) -> int:
        """Delete ``done`` and ``merged`` jobs finished more than ``older_than`` ago."""
        cutoff = _ms(self.clock() - _seconds(older_than))

        def run(conn: sa.Connection) -> int:
            res = conn.execute(
                sa.delete(jobs).where(jobs.c.state.in_([DONE, MERGED]), jobs.c.finished_ms < cutoff)
            )
            return int(res.rowcount)

        return self.transact(run)
