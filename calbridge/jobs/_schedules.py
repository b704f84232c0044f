"""Recurring jobs: rows of ``job_schedules`` that the workers turn into jobs when due.

Like :mod:`calbridge.jobs._ops`, every function takes a ``conn`` and runs inside the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..store import is_postgres
from ._model import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE
from ._ops import enqueue, payload_of, seconds, when
from ._schema import job_schedules

__all__ = ["enqueue_due_schedules", "ensure_schedule", "remove_schedule", "remove_schedules"]


def _ms(t: float) -> int:
    return round(t * 1000)


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
