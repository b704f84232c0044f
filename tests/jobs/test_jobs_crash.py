"""Worker subprocesses killed (SIGKILL) or stopped (SIGSTOP) at deterministic points.

Scenarios Q1, Q2 and Q4 of the reliability reference, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from calbridge.jobs import JobQueue, jobs
from tests.jobs.jobsupport import (
    count,
    effect_rows,
    job_rows,
    process_state,
    read_log,
    start_worker,
    stop_workers,
    wait_for,
)

pytestmark = pytest.mark.slow

LEASE = 1.0


@pytest.mark.parametrize("crash", ["after_claim", "after_effect", "before_ack"])
def test_sigkill_at_crash_point_loses_nothing_and_applies_effects_once(
    worker_db: sa.Engine, db_url: str, tmp_path: Path, crash: str
) -> None:
    """A worker killed mid-job: the job is run again after its lease, every effect once."""
    queue = JobQueue(worker_db)
    crash_id = queue.enqueue("effect", {"crash": crash})
    others = [queue.enqueue("effect", {"n": i}) for i in range(5)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker(db_url, log, concurrency=1, lease=LEASE) for log in logs]
    try:
        wait_for(lambda: count(worker_db, jobs.c.state == "done") == 6, timeout=40, what="all done")
        rows = job_rows(worker_db)
        effects = effect_rows(worker_db)

        assert [p.poll() for p in procs].count(-signal.SIGKILL) == 1
        assert sorted(effects) == sorted([crash_id, *others])
        assert rows[crash_id]["attempts"] == 2
        assert rows[crash_id]["lease_token"] == 2
        # the effect was made once: by the first claim when it got that far, else the second
        assert effects[crash_id]["token"] == (2 if crash == "after_claim" else 1)
        assert all(rows[i]["attempts"] == 1 for i in others)
        assert count(worker_db, jobs.c.state == "running") == 0
    finally:
        stop_workers(procs)


def test_stopped_worker_that_resumes_after_losing_its_lease_changes_nothing(
    worker_db: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Fencing (Q4): A stalls past its lease, B finishes the job, A wakes up: A writes nothing."""
    queue = JobQueue(worker_db)
    job_id = queue.enqueue("effect", {"crash": "stop_before_effect"})
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(db_url, log_a, concurrency=1, lease=LEASE)
    procs = [a]
    try:
        wait_for(lambda: process_state(a.pid) == "T", timeout=20, what="worker A stopped")
        b = start_worker(db_url, log_b, concurrency=1, lease=LEASE)
        procs.append(b)
        wait_for(lambda: count(worker_db, jobs.c.state == "done") == 1, timeout=20, what="done")
        done_row = job_rows(worker_db)[job_id]

        os.kill(a.pid, signal.SIGCONT)
        wait_for(
            lambda: any(line[0] == "resumed" for line in read_log([log_a])),
            timeout=10,
            what="A resumed",
        )
        time.sleep(0.5)  # A's fenced write and its failing heartbeat happen now

        assert a.poll() is None, "worker A should survive losing its lease"
        assert job_rows(worker_db)[job_id] == done_row
        assert done_row["state"] == "done"
        assert done_row["attempts"] == 2
        assert done_row["lease_token"] == 2
        effect = effect_rows(worker_db)[job_id]
        assert (effect["token"], effect["pid"]) == (2, b.pid)
        assert [line for line in read_log([log_a]) if line[0] == "run"] == []
        assert len([line for line in read_log([log_b]) if line[0] == "run"]) == 1
    finally:
        stop_workers(procs)
