"""The job queue's tables, defined on the store's :data:`calbridge.store.metadata`.

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

from typing import Final

import sqlalchemy as sa

from ..store import metadata

__all__ = ["STATES", "job_schedules", "jobs"]

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
