"""The job queue's tables and statements: ``calbridge.store.jobs``.

The durable job queue (:mod:`calbridge.jobs`: :class:`~calbridge.jobs.JobQueue`, the
worker, handlers) keeps its transactions, retries and wake-ups; every statement it runs is
here, on the store's :data:`calbridge.store.metadata`. Each function takes a ``conn``,
runs inside the caller's transaction and does not commit.

Migration: ``calbridge/store/migrations/versions/0002_jobs.py`` (keep the two in step;
``tests/jobs/test_schema.py`` compares them).

Times are integer epoch milliseconds (``*_ms``), UTC. States::

    queued ──claim──> running ──ack──> done
      ^                 │  │
      └── retry/later ──┘  └──(attempts == max_attempts)──> dead
                        └──(failed while a coalesced twin was queued)──> merged

A ``running`` row whose lease has expired (its worker crashed or stalled) is claimed
again directly, with a new fencing token.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from calbridge.errors import CalbridgeError

from ._tx import PG_NOW_SQL, database_now, dialect_insert, is_postgres
from .schema import metadata

__all__ = [
    "DEAD",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "DONE",
    "JOB_COLUMNS",
    "MERGED",
    "NOTIFY_CHANNEL",
    "QUEUED",
    "RUNNING",
    "STATES",
    "Job",
    "LeaseLost",
    "assert_lease",
    "claim",
    "claim_many",
    "complete",
    "db_now",
    "enqueue",
    "enqueue_coalesced",
    "enqueue_due_schedules",
    "ensure_schedule",
    "fail",
    "get_job",
    "heartbeat",
    "is_transient",
    "job_schedules",
    "job_stats",
    "jobs",
    "list_jobs",
    "listening",
    "may_claim",
    "prune_batch",
    "release",
    "remove_queued",
    "remove_schedule",
    "remove_schedules",
    "requeue_dead",
    "row_to_job",
]

log = logging.getLogger("calbridge.jobs")

#: the queue a job goes to when none is named
DEFAULT_QUEUE: Final = "default"
#: claims before a failing job is dead-lettered
DEFAULT_MAX_ATTEMPTS: Final = 10


@attrs.frozen(kw_only=True, eq=False)
class Job:
    """One job as read from the queue (what a handler receives).

    Attributes:
        id: the job's row id.
        kind: which handler runs it.
        queue: the queue it is in (workers listen to a set of queues).
        payload: the secret-free JSON object given at enqueue time.
        state: ``queued``, ``running``, ``done``, ``dead`` or ``merged``.
        attempts: claims so far, this one included.
        max_attempts: claims allowed before a failing job goes dead.
        token: the fencing token of this claim. Every write made on the job's behalf
            must present it (:meth:`JobQueue.assert_lease`); a worker whose lease
            expired holds a stale token and changes nothing.
        run_at: epoch seconds at which it became (or becomes) runnable.
        coalesce_key: at most one queued job per key.
        serial_key: at most one running job per key.
        priority: lower runs first.
        lease_expires_at: epoch seconds when the current lease ends (None unless running).
        last_error: the last failure's scrubbed text.
    """

    id: int
    kind: str
    queue: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    token: int
    run_at: float
    coalesce_key: str | None = None
    serial_key: str | None = None
    priority: int = 0
    lease_expires_at: float | None = None
    last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self.kind!r} {self.state} attempt {self.attempts}/"
            f"{self.max_attempts} token {self.token}>"
        )


class LeaseLost(CalbridgeError):
    """The job's lease passed to another worker; this worker's result is discarded."""

    def __init__(self, job_id: int, token: int) -> None:
        self.job_id = job_id
        self.token = token
        super().__init__(
            f"job {job_id} lost its lease (fencing token {token} is stale); "
            "another worker owns it now, so nothing was written"
        )


# -- tables ------------------------------------------------------------------------------

QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
DEAD: Final = "dead"
MERGED: Final = "merged"
#: every job state
STATES: Final = (QUEUED, RUNNING, DONE, DEAD, MERGED)

_KEY = sa.String(255)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    #: secret-free JSON object given to the handler
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    #: lower runs first
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("run_at_ms", sa.BigInteger, nullable=False),
    #: claims so far (a retry-later reschedule gives its claim back)
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    #: at most one queued job per coalesce key
    sa.Column("coalesce_key", _KEY),
    #: at most one running job per serial key
    sa.Column("serial_key", _KEY),
    #: fencing token: +1 on every claim; ack/heartbeat/fail must present the current one
    sa.Column("lease_token", sa.BigInteger, nullable=False),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_ms", sa.BigInteger),
    sa.Column("heartbeat_ms", sa.BigInteger),
    #: the last failure, scrubbed of secrets (kept on dead jobs)
    sa.Column("last_error", sa.Text),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.Column("finished_ms", sa.BigInteger),
    sa.CheckConstraint(
        "state IN ('queued', 'running', 'done', 'dead', 'merged')", name="state_valid"
    ),
    sa.Index("ix_jobs_ready", "state", "queue", "priority", "run_at_ms", "id"),
    sa.Index("ix_jobs_lease", "state", "lease_expires_ms"),
    sa.Index("ix_jobs_serial_state", "serial_key", "state"),
    sa.Index(
        "uq_jobs_coalesce_queued",
        "coalesce_key",
        unique=True,
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    ),
    sa.Index(
        "uq_jobs_serial_running",
        "serial_key",
        unique=True,
        sqlite_where=sa.text("state = 'running'"),
        postgresql_where=sa.text("state = 'running'"),
    ),
)

job_schedules = sa.Table(
    "job_schedules",
    metadata,
    sa.Column("name", _KEY, primary_key=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("interval_ms", sa.BigInteger, nullable=False),
    sa.Column("next_run_ms", sa.BigInteger, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("last_job_id", sa.BigInteger),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.CheckConstraint("interval_ms > 0", name="interval_positive"),
)


# -- statements --------------------------------------------------------------------------

_QUEUED_PREDICATE: Final = "state = 'queued'"

#: the PostgreSQL channel on which a job that is due now is announced (payload: its queue)
NOTIFY_CHANNEL: Final = "calbridge_jobs"

_PG_NOW: Final = PG_NOW_SQL


def _ms(t: float) -> int:
    return round(t * 1000)


#: epoch seconds by the database's clock on PostgreSQL, the system clock on SQLite
db_now = database_now


def _now_ms_sql(conn: sa.Connection, now: float | None) -> sa.ColumnElement[int]:
    """``now`` in epoch ms as a bound value, or the database's clock in the statement."""
    if now is None and is_postgres(conn):
        return sa.cast(sa.text(f"{_PG_NOW} * 1000"), sa.BigInteger)
    return sa.literal(_ms(time.time() if now is None else now), sa.BigInteger)


def notify(conn: sa.Connection, queue: str) -> None:
    """Announce a due job of ``queue`` to listening workers at commit (PostgreSQL only).

    PostgreSQL folds identical notifications of one transaction into one.
    """
    if is_postgres(conn):
        conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, queue)))


def when(value: float | datetime | None, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("run_at must be timezone-aware (or epoch seconds)")
        return value.timestamp()
    return float(value)


def seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def payload_of(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    data = dict(payload or {})
    try:
        # round-trip: only plain JSON reaches the database (a Secret cannot sneak in)
        out: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job payload must be a JSON object of plain values: {exc}") from None
    return out


JOB_COLUMNS: Final = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.queue,
    jobs.c.payload,
    jobs.c.state,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.lease_token,
    jobs.c.run_at_ms,
    jobs.c.coalesce_key,
    jobs.c.serial_key,
    jobs.c.priority,
    jobs.c.lease_expires_ms,
    jobs.c.last_error,
)


def row_to_job(m: sa.RowMapping) -> Job:
    expires = m["lease_expires_ms"]
    return Job(
        id=int(m["id"]),
        kind=m["kind"],
        queue=m["queue"],
        payload=dict(m["payload"]),
        state=m["state"],
        attempts=int(m["attempts"]),
        max_attempts=int(m["max_attempts"]),
        token=int(m["lease_token"]),
        run_at=m["run_at_ms"] / 1000,
        coalesce_key=m["coalesce_key"],
        serial_key=m["serial_key"],
        priority=int(m["priority"]),
        lease_expires_at=None if expires is None else expires / 1000,
        last_error=m["last_error"],
    )


# ---------------------------------------------------------------- enqueue


def enqueue(
    conn: sa.Connection,
    kind: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    run_at: float | datetime | None = None,
    coalesce_key: str | None = None,
    serial_key: str | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: float | None = None,
) -> int:
    """Add a job inside the caller's transaction; return the id of the job that will run.

    With a ``coalesce_key``, a job already queued under that key absorbs this one: no new
    row is added, the queued job keeps its payload and moves to the earlier ``run_at`` and
    the higher priority, and its id is returned. A job of that key that is *running* does
    not absorb it (it may have read the state too early), so a storm of enqueues leaves
    at most one queued and one running job.

    ``serial_key`` defaults to ``coalesce_key``: jobs sharing it never run at once.
    ``now`` defaults to :func:`db_now` (the database's clock on PostgreSQL). On PostgreSQL
    a job due now is announced on :data:`NOTIFY_CHANNEL` at commit (idle workers wake).
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    now = db_now(conn) if now is None else now
    now_ms = _ms(now)
    run_at_ms = _ms(when(run_at, now))
    if run_at_ms <= now_ms:
        notify(conn, queue)
    values: dict[str, Any] = {
        "queue": queue,
        "kind": kind,
        "payload": payload_of(payload),
        "state": QUEUED,
        "priority": priority,
        "run_at_ms": run_at_ms,
        "attempts": 0,
        "max_attempts": max_attempts,
        "coalesce_key": coalesce_key,
        "serial_key": serial_key if serial_key is not None else coalesce_key,
        "lease_token": 0,
        "created_ms": now_ms,
        "updated_ms": now_ms,
    }
    if coalesce_key is None:
        return int(conn.execute(sa.insert(jobs).values(values).returning(jobs.c.id)).scalar_one())
    ins = dialect_insert(conn, jobs).values(values)
    stmt = ins.on_conflict_do_update(
        index_elements=[jobs.c.coalesce_key],
        index_where=sa.text(_QUEUED_PREDICATE),
        set_={
            "run_at_ms": sa.case(
                (ins.excluded.run_at_ms < jobs.c.run_at_ms, ins.excluded.run_at_ms),
                else_=jobs.c.run_at_ms,
            ),
            "priority": sa.case(
                (ins.excluded.priority < jobs.c.priority, ins.excluded.priority),
                else_=jobs.c.priority,
            ),
            "updated_ms": now_ms,
        },
    ).returning(jobs.c.id)
    return int(conn.execute(stmt).scalar_one())


def enqueue_coalesced(
    conn: sa.Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    coalesce_key: str,
    now: float,
    delay: float = 0.0,
) -> int:
    """``enqueue(conn, kind, payload, coalesce_key=key, run_at=now + delay, now=now)`` as
    one statement built once per dialect (building an upsert costs milliseconds, more than
    running it): the webhook receiver runs it for every distinct job of a commit. No
    ``NOTIFY`` is sent (workers find the job by polling)."""
    now_ms = int(now * 1000)
    return int(
        conn.execute(
            _coalesced_enqueue(conn.dialect.name),
            {
                "queue": DEFAULT_QUEUE,
                "kind": kind,
                "payload": payload,
                "priority": 0,
                "run_at_ms": int((now + delay) * 1000),
                "max_attempts": DEFAULT_MAX_ATTEMPTS,
                "coalesce_key": coalesce_key,
                "serial_key": coalesce_key,
                "created_ms": now_ms,
                "updated_ms": now_ms,
            },
        ).scalar_one()
    )


@functools.cache
def _coalesced_enqueue(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    j = jobs.c
    ins = insert(jobs).values(
        queue=sa.bindparam("queue", type_=j.queue.type),
        kind=sa.bindparam("kind", type_=j.kind.type),
        payload=sa.bindparam("payload", type_=j.payload.type),
        state=QUEUED,
        priority=sa.bindparam("priority", type_=j.priority.type),
        run_at_ms=sa.bindparam("run_at_ms", type_=j.run_at_ms.type),
        attempts=0,
        max_attempts=sa.bindparam("max_attempts", type_=j.max_attempts.type),
        coalesce_key=sa.bindparam("coalesce_key", type_=j.coalesce_key.type),
        serial_key=sa.bindparam("serial_key", type_=j.serial_key.type),
        lease_token=0,
        created_ms=sa.bindparam("created_ms", type_=j.created_ms.type),
        updated_ms=sa.bindparam("updated_ms", type_=j.updated_ms.type),
    )
    return ins.on_conflict_do_update(
        index_elements=[j.coalesce_key],
        index_where=sa.text(_QUEUED_PREDICATE),
        set_={
            "run_at_ms": sa.case(
                (ins.excluded.run_at_ms < j.run_at_ms, ins.excluded.run_at_ms),
                else_=j.run_at_ms,
            ),
            "priority": sa.case(
                (ins.excluded.priority < j.priority, ins.excluded.priority),
                else_=j.priority,
            ),
            "updated_ms": ins.excluded.updated_ms,
        },
    ).returning(j.id)


def remove_queued(conn: sa.Connection, *, key_part: str) -> int:
    """Delete the queued jobs whose coalescing key contains ``:<key_part>:`` (e.g. an
    account id: ``sync:<account>:<calendar>``); returns how many went. Running jobs stay."""
    result = conn.execute(
        sa.delete(jobs).where(jobs.c.state == QUEUED, jobs.c.coalesce_key.like(f"%:{key_part}:%"))
    )
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- claim / ack


def may_claim(
    conn: sa.Connection,
    *,
    kinds: Sequence[str],
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    now: float | None = None,
) -> bool:
    """Cheap read-only pre-check: could :func:`claim` find anything? (May say yes wrongly.)

    One statement: idle workers poll with it, without taking SQLite's single write lock
    or PostgreSQL row locks. ``now`` None: the database's clock (see :func:`db_now`).
    """
    if not kinds:
        return False
    now_ms = _now_ms_sql(conn, now)
    scope = (jobs.c.queue.in_(list(queues)), jobs.c.kind.in_(list(kinds)))
    q = sa.select(
        sa.or_(
            sa.exists().where(jobs.c.state == RUNNING, jobs.c.lease_expires_ms <= now_ms, *scope),
            sa.exists().where(jobs.c.state == QUEUED, jobs.c.run_at_ms <= now_ms, *scope),
        )
    )
    return bool(conn.execute(q).scalar())


def claim(
    conn: sa.Connection,
    *,
    owner: str,
    kinds: Sequence[str],
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    lease: float,
    now: float,
) -> Job | None:
    """Claim one runnable job for ``owner`` with a new fencing token, or return None.

    See :func:`claim_many`.
    """
    got = claim_many(conn, owner=owner, kinds=kinds, queues=queues, lease=lease, now=now, limit=1)
    return got[0] if got else None


def claim_many(
    conn: sa.Connection,
    *,
    owner: str,
    kinds: Sequence[str],
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    lease: float,
    now: float,
    limit: int,
) -> list[Job]:
    """Claim up to ``limit`` runnable jobs for ``owner``, each with a new fencing token.

    Runnable: a ``running`` job whose lease expired (its worker died; it is claimed again
    directly, or dead-lettered when it has used up its attempts), else the first ``queued``
    jobs that are due, whose serial key has no running job and no earlier due job (serial
    keys run in order: priority, run_at, id; so one claim never takes two jobs of a key).
    On PostgreSQL the candidate rows are locked with ``FOR UPDATE SKIP LOCKED``, so
    concurrent workers never wait on them. The ready jobs are taken in one statement.
    """
    if not kinds or limit < 1:
        return []
    now_ms = _ms(now)
    pg = is_postgres(conn)
    scope = (jobs.c.queue.in_(list(queues)), jobs.c.kind.in_(list(kinds)))
    taken: list[Job] = []
    while len(taken) < limit:
        expired_q = (
            sa.select(jobs.c.id, jobs.c.attempts, jobs.c.max_attempts)
            .where(jobs.c.state == RUNNING, jobs.c.lease_expires_ms <= now_ms, *scope)
            .order_by(jobs.c.lease_expires_ms)
            .limit(1)
        )
        if pg:
            expired_q = expired_q.with_for_update(skip_locked=True)
        row = conn.execute(expired_q).first()
        if row is None:
            break
        if row.attempts >= row.max_attempts:
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == row.id)
                .values(
                    state=DEAD,
                    last_error=(
                        f"lease expired on attempt {row.attempts} of {row.max_attempts}: "
                        "the worker crashed or stalled while running it"
                    ),
                    lease_owner=None,
                    lease_expires_ms=None,
                    finished_ms=now_ms,
                    updated_ms=now_ms,
                )
            )
            log.warning("job %s is dead: its lease expired on its last attempt", row.id)
            continue
        log.info("job %s: lease expired, claiming it again", row.id)
        taken.extend(_take(conn, [row.id], owner=owner, lease=lease, now_ms=now_ms))
    if len(taken) >= limit:
        return taken

    other = jobs.alias("other")
    serial_busy = sa.exists().where(
        other.c.serial_key == jobs.c.serial_key, other.c.state == RUNNING
    )
    # FIFO per serial key: only the first due job of a key is a candidate, so a worker
    # that finds it locked (SKIP LOCKED) does not start the key's next job instead
    serial_behind = sa.exists().where(
        other.c.serial_key == jobs.c.serial_key,
        other.c.state == QUEUED,
        other.c.run_at_ms <= now_ms,
        sa.tuple_(other.c.priority, other.c.run_at_ms, other.c.id)
        < sa.tuple_(jobs.c.priority, jobs.c.run_at_ms, jobs.c.id),
    )
    ready_q = (
        sa.select(jobs.c.id)
        .where(
            jobs.c.state == QUEUED,
            jobs.c.run_at_ms <= now_ms,
            *scope,
            sa.or_(jobs.c.serial_key.is_(None), sa.and_(~serial_busy, ~serial_behind)),
        )
        .order_by(jobs.c.priority, jobs.c.run_at_ms, jobs.c.id)
        .limit(limit - len(taken))
    )
    if pg:
        ready_q = ready_q.with_for_update(skip_locked=True, of=jobs)
    ids = [int(i) for i in conn.execute(ready_q).scalars()]
    if ids:
        taken.extend(_take(conn, ids, owner=owner, lease=lease, now_ms=now_ms))
    return taken


def _take(
    conn: sa.Connection, ids: Sequence[int], *, owner: str, lease: float, now_ms: int
) -> list[Job]:
    """Mark ``ids`` running for ``owner``; the jobs in the order of ``ids``."""
    rows = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id.in_(list(ids)))
        .values(
            state=RUNNING,
            attempts=jobs.c.attempts + 1,
            lease_token=jobs.c.lease_token + 1,
            lease_owner=owner,
            lease_expires_ms=now_ms + _ms(lease),
            heartbeat_ms=now_ms,
            updated_ms=now_ms,
        )
        .returning(*JOB_COLUMNS)
    ).all()
    by_id = {int(r.id): row_to_job(r._mapping) for r in rows}
    return [by_id[i] for i in ids]


def _fenced(job: Job) -> tuple[sa.ColumnElement[bool], ...]:
    return (jobs.c.id == job.id, jobs.c.lease_token == job.token, jobs.c.state == RUNNING)


def heartbeat(conn: sa.Connection, job: Job, *, lease: float | None, now: float) -> bool:
    """Extend the lease (when ``lease`` is given); False when the token is stale."""
    values: dict[str, Any] = {"heartbeat_ms": _ms(now)}
    if lease is not None:
        values["lease_expires_ms"] = _ms(now + lease)
    res = conn.execute(sa.update(jobs).where(*_fenced(job)).values(values))
    return res.rowcount == 1


def assert_lease(conn: sa.Connection, job: Job, *, now: float | None = None) -> None:
    """Raise :class:`LeaseLost` unless ``job.token`` is still the job's current token.

    Call it in the same transaction as a handler's database effects: the row is locked
    (PostgreSQL) or the database is (SQLite ``BEGIN IMMEDIATE``) until commit, so no other
    worker can claim the job between the check and the commit. ``now`` (recorded as the
    heartbeat) defaults to :func:`db_now`.
    """
    if not heartbeat(conn, job, lease=None, now=db_now(conn) if now is None else now):
        raise LeaseLost(job.id, job.token)


def complete(conn: sa.Connection, job: Job, *, now: float) -> bool:
    """Acknowledge success (fenced); False when the lease was lost (nothing changed)."""
    now_ms = _ms(now)
    res = conn.execute(
        sa.update(jobs)
        .where(*_fenced(job))
        .values(
            state=DONE,
            lease_owner=None,
            lease_expires_ms=None,
            finished_ms=now_ms,
            updated_ms=now_ms,
        )
    )
    return res.rowcount == 1


def fail(
    conn: sa.Connection,
    job: Job,
    *,
    error: str,
    retry_at: float | None,
    counts: bool = True,
    now: float,
) -> str | None:
    """Record a failure (fenced) and return the job's new state, or None if the lease was lost.

    ``retry_at`` None, or a counted failure on the last attempt, makes the job ``dead``
    (the error is kept). Otherwise it is queued again for ``retry_at``; ``counts=False``
    (a retry-later signal) gives the claim back. If a twin with the same coalesce key was
    queued meanwhile, that twin takes over (``run_at`` no earlier than ``retry_at``, the
    attempt count carried over) and this job ends as ``merged``.
    """
    now_ms = _ms(now)
    attempts = job.attempts if counts else job.attempts - 1
    cleared = {"lease_owner": None, "lease_expires_ms": None, "updated_ms": now_ms}
    if retry_at is None or (counts and job.attempts >= job.max_attempts):
        res = conn.execute(
            sa.update(jobs)
            .where(*_fenced(job))
            .values(state=DEAD, last_error=error, finished_ms=now_ms, **cleared)
        )
        return DEAD if res.rowcount == 1 else None
    retry_ms = _ms(retry_at)
    if job.coalesce_key is not None:
        twin_q = sa.select(jobs.c.id, jobs.c.run_at_ms).where(
            jobs.c.coalesce_key == job.coalesce_key, jobs.c.state == QUEUED
        )
        if is_postgres(conn):
            twin_q = twin_q.with_for_update()
        twin = conn.execute(twin_q).first()
        if twin is not None:
            res = conn.execute(
                sa.update(jobs)
                .where(*_fenced(job))
                .values(state=MERGED, last_error=error, finished_ms=now_ms, **cleared)
            )
            if res.rowcount != 1:
                return None
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == twin.id)
                .values(
                    run_at_ms=max(twin.run_at_ms, retry_ms),
                    attempts=attempts,
                    last_error=error,
                    updated_ms=now_ms,
                )
            )
            return MERGED
    res = conn.execute(
        sa.update(jobs)
        .where(*_fenced(job))
        .values(state=QUEUED, run_at_ms=retry_ms, attempts=attempts, last_error=error, **cleared)
    )
    return QUEUED if res.rowcount == 1 else None


def release(conn: sa.Connection, job: Job, *, now: float) -> bool:
    """Give the job back (shutdown): its lease ends now and the claim does not count.

    The job stays ``running`` with an expired lease, so the next claim by any worker takes
    it over at once (and a serial key stays held until then).
    """
    res = conn.execute(
        sa.update(jobs)
        .where(*_fenced(job))
        .values(
            lease_expires_ms=_ms(now),
            lease_owner=None,
            attempts=jobs.c.attempts - 1,
            updated_ms=_ms(now),
        )
    )
    return res.rowcount == 1


def prune_batch(conn: sa.Connection, *, states: Sequence[str], before_ms: int, batch: int) -> int:
    """Delete at most ``batch`` jobs in ``states`` finished before ``before_ms``; the count.

    Bounded, so pruning a huge backlog never holds one long transaction: call it again
    (each time in a transaction of its own) until it deletes fewer than ``batch``.
    """
    unknown = set(states) - {DONE, MERGED, DEAD}
    if unknown:
        raise ValueError(f"only finished jobs (done, merged, dead) can be pruned, not {unknown}")
    victims = (
        sa.select(jobs.c.id)
        .where(jobs.c.state.in_(list(states)), jobs.c.finished_ms < before_ms)
        .order_by(jobs.c.id)
        .limit(batch)
    )
    if is_postgres(conn):
        victims = victims.with_for_update(skip_locked=True)
    res = conn.execute(sa.delete(jobs).where(jobs.c.id.in_(victims.scalar_subquery())))
    return int(res.rowcount)


# -- recurring jobs ----------------------------------------------------------------------


def ensure_schedule(
    conn: sa.Connection,
    name: str,
    kind: str,
    payload: Mapping[str, Any] | None = None,
    *,
    every: float | timedelta,
    first_run_at: float | datetime | None = None,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: float,
) -> None:
    """Create or update the recurring job ``name`` (idempotent: call it at every start).

    The first run is due at ``first_run_at`` (default: now). Updating an existing schedule
    keeps its next run time, pulled in to at most one new interval from now.
    """
    interval_ms = _ms(seconds(every))
    if interval_ms <= 0:
        raise ValueError("every must be positive")
    now_ms = _ms(now)
    values: dict[str, Any] = {
        "queue": queue,
        "kind": kind,
        "payload": payload_of(payload),
        "interval_ms": interval_ms,
        "max_attempts": max_attempts,
        "priority": priority,
        "updated_ms": now_ms,
    }
    ins = (postgresql.insert if is_postgres(conn) else sqlite.insert)(job_schedules).values(
        name=name, next_run_ms=_ms(when(first_run_at, now)), **values
    )
    capped = now_ms + interval_ms
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=[job_schedules.c.name],
            set_={
                **values,
                "next_run_ms": sa.case(
                    (job_schedules.c.next_run_ms > capped, capped),
                    else_=job_schedules.c.next_run_ms,
                ),
            },
        )
    )


def remove_schedule(conn: sa.Connection, name: str) -> bool:
    """Delete the recurring job ``name`` (its queued job, if any, stays); False if unknown."""
    res = conn.execute(sa.delete(job_schedules).where(job_schedules.c.name == name))
    return res.rowcount == 1


def remove_schedules(conn: sa.Connection, *, key_part: str, kind: str | None = None) -> int:
    """Delete the recurring jobs whose name contains ``:<key_part>:`` (and, with ``kind``,
    starts with ``<kind>:``); returns how many went."""
    query = sa.delete(job_schedules).where(job_schedules.c.name.like(f"%:{key_part}:%"))
    if kind is not None:
        query = query.where(job_schedules.c.name.like(f"{kind}:%"))
    return int(conn.execute(query).rowcount or 0)


def enqueue_due_schedules(conn: sa.Connection, *, now: float) -> list[int]:
    """Enqueue one job for every schedule that is due; return their ids.

    Each schedule's job is coalesced on ``schedule:<name>`` (missed runs collapse into
    one, and two runs of one schedule never overlap) and the schedule moves to its next
    occurrence after ``now``. Safe to call from every worker at once.
    """
    now_ms = _ms(now)
    q = sa.select(job_schedules).where(job_schedules.c.next_run_ms <= now_ms)
    if is_postgres(conn):
        q = q.with_for_update(skip_locked=True)
    ids: list[int] = []
    for s in conn.execute(q).all():
        job_id = enqueue(
            conn,
            s.kind,
            s.payload,
            queue=s.queue,
            run_at=s.next_run_ms / 1000,
            coalesce_key=f"schedule:{s.name}",
            priority=s.priority,
            max_attempts=s.max_attempts,
            now=now,
        )
        missed = (now_ms - s.next_run_ms) // s.interval_ms
        conn.execute(
            sa.update(job_schedules)
            .where(job_schedules.c.name == s.name)
            .values(
                next_run_ms=s.next_run_ms + (missed + 1) * s.interval_ms,
                last_job_id=job_id,
                updated_ms=now_ms,
            )
        )
        ids.append(job_id)
    return ids


# -- inspection ----------------------------------------------------------------------------


def get_job(conn: sa.Connection, job_id: int) -> Job | None:
    """One job by id."""
    row = conn.execute(sa.select(*JOB_COLUMNS).where(jobs.c.id == job_id)).first()
    return None if row is None else row_to_job(row._mapping)


def list_jobs(
    conn: sa.Connection,
    *,
    states: Iterable[str] | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[Job]:
    """Jobs by id, optionally filtered by state and kind."""
    q = sa.select(*JOB_COLUMNS).order_by(jobs.c.id).limit(limit)
    if states is not None:
        q = q.where(jobs.c.state.in_(list(states)))
    if kind is not None:
        q = q.where(jobs.c.kind == kind)
    return [row_to_job(r._mapping) for r in conn.execute(q)]


def job_stats(conn: sa.Connection) -> dict[str, dict[str, int]]:
    """Job counts: queue -> state -> count (states with no jobs are left out)."""
    q = sa.select(jobs.c.queue, jobs.c.state, sa.func.count()).group_by(jobs.c.queue, jobs.c.state)
    out: dict[str, dict[str, int]] = {}
    for queue, state, count in conn.execute(q):
        out.setdefault(queue, {})[state] = int(count)
    return out


def requeue_dead(conn: sa.Connection, job_id: int, *, now: float) -> bool:
    """Queue a dead job again with a fresh attempt budget; False when it is not dead, or
    when a job of its coalesce key is already queued (it does the work)."""
    key = conn.execute(sa.select(jobs.c.coalesce_key).where(jobs.c.id == job_id)).scalar()
    if (
        key is not None
        and conn.execute(
            sa.select(jobs.c.id).where(jobs.c.coalesce_key == key, jobs.c.state == QUEUED)
        ).first()
    ):
        return False
    res = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == DEAD)
        .values(state=QUEUED, attempts=0, run_at_ms=_ms(now), finished_ms=None)
    )
    return res.rowcount == 1


# -- transactions and wake-ups ---------------------------------------------------------------


def is_transient(exc: BaseException, *, integrity: bool) -> bool:
    """Whether a failed queue transaction is worth running again: ``SQLITE_BUSY`` /
    ``SQLITE_LOCKED``, a PostgreSQL serialization failure, deadlock or lock timeout, and
    with ``integrity`` a unique violation (a concurrent insert of the same row)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
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


def _conninfo(url: sa.URL) -> str:
    """A libpq connection string for the engine's URL (password included, never logged)."""
    from psycopg.conninfo import make_conninfo

    params: dict[str, str] = {
        k: str(v) for k, v in url.translate_connect_args(username="user", database="dbname").items()
    }
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    return make_conninfo("", **params)


@asynccontextmanager
async def listening(
    engine: sa.Engine, channel: str = NOTIFY_CHANNEL
) -> AsyncIterator[AsyncIterator[str]]:
    """PostgreSQL: ``LISTEN`` on ``channel`` over a connection of its own (autocommit);
    the block gets the notifications' payloads as they come. Raises when the connection
    cannot be opened or is lost."""
    import psycopg
    from psycopg import sql

    conn = await psycopg.AsyncConnection.connect(
        _conninfo(engine.url), autocommit=True, connect_timeout=10
    )
    async with conn:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield (note.payload async for note in conn.notifies())
