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

LEASE = 1.5  # short, so takeovers are quick; long enough for a loaded machine


CRASH_POINTS = ("after_claim", "after_effect", "before_ack")


def test_sigkill_at_crash_points_loses_nothing_and_applies_effects_once(
    worker_db: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Workers killed mid-job (Q1, Q2): each job runs again after its lease, effects once.

    One job per crash point kills the worker that first claims it: after the claim
    (before the handler), after the handler committed its effect, and after the handler
    returned but before the ack. Four workers start; three die, the survivors finish.
    """
    queue = JobQueue(worker_db)
    crashing = {point: queue.enqueue("effect", {"crash": point}) for point in CRASH_POINTS}
    others = [queue.enqueue("effect", {"n": i}) for i in range(6)]
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = [start_worker(db_url, log, concurrency=1, lease=LEASE) for log in logs]
    try:
        wait_for(lambda: count(worker_db, jobs.c.state == "done") == 9, timeout=60, what="all done")
        rows = job_rows(worker_db)
        effects = effect_rows(worker_db)

        assert [p.poll() for p in procs].count(-signal.SIGKILL) == 3
        assert sorted(effects) == sorted([*crashing.values(), *others])
        for point, job_id in crashing.items():
            assert (rows[job_id]["attempts"], rows[job_id]["lease_token"]) == (2, 2), point
            # made once: by the first claim when it got that far, else by the second
            expected = 2 if point == "after_claim" else 1
            assert effects[job_id]["token"] == expected, point
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
