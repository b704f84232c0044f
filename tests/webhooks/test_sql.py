"""The receiver's pre-built enqueue agrees with calbridge.jobs.enqueue."""

from __future__ import annotations

import sqlalchemy as sa

from calbridge import jobs
from calbridge.jobs import enqueue_coalesced
from calbridge.store import write

COLUMNS = [c for c in jobs.jobs.c if c.name not in ("id", "coalesce_key", "serial_key")]


def _row(conn: sa.Connection, job_id: int) -> dict[str, object]:
    row = conn.execute(sa.select(*COLUMNS).where(jobs.jobs.c.id == job_id)).one()
    return dict(row._mapping)


def test_prebuilt_enqueue_matches_jobs_enqueue(engine: sa.Engine) -> None:
    payload = {"account": "a", "calendar": "c"}
    with write(engine) as conn:
        reference = jobs.enqueue(conn, "sync", payload, coalesce_key="ref", now=100.0)
        fast = enqueue_coalesced(conn, "sync", payload, coalesce_key="fast", now=100.0)
        assert reference != fast
        assert _row(conn, reference) == _row(conn, fast)
        # coalescing both ways: same id, earlier run_at wins
        assert enqueue_coalesced(conn, "sync", payload, coalesce_key="ref", now=90.0) == (reference)
        assert jobs.enqueue(conn, "sync", payload, coalesce_key="fast", now=90.0) == fast
        assert _row(conn, reference)["run_at_ms"] == _row(conn, fast)["run_at_ms"] == 90_000
        delayed = enqueue_coalesced(
            conn, "sync", payload, coalesce_key="later", now=100.0, delay=2.0
        )
        assert _row(conn, delayed)["run_at_ms"] == 102_000
        keys = conn.execute(
            sa.select(jobs.jobs.c.coalesce_key, jobs.jobs.c.serial_key).order_by(jobs.jobs.c.id)
        ).all()
        assert [tuple(k) for k in keys] == [("ref", "ref"), ("fast", "fast"), ("later", "later")]
