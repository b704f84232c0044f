"""Two worker processes share 1,000 jobs (Q5, Q6) on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import sqlalchemy as sa

from calbridge.jobs import enqueue, jobs
from calbridge.store import write
from tests.jobs.jobsupport import (
    count,
    effect_rows,
    job_rows,
    read_log,
    start_worker,
    stderr_of,
    stop_workers,
    wait_for,
)

pytestmark = pytest.mark.slow

PLAIN = 790
SERIAL_KEYS = 10
PER_KEY = 21


def test_two_workers_run_a_thousand_jobs_exactly_once(
    worker_db: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """Each job runs once, serial keys never overlap, the poison job goes dead alone."""
    with write(worker_db) as conn:
        plain = [enqueue(conn, "effect", {"n": i}) for i in range(PLAIN)]
        serial = [
            enqueue(conn, "effect", {"sleep": 0.002}, serial_key=f"acct-{k}")
            for _ in range(PER_KEY)
            for k in range(SERIAL_KEYS)
        ]
        poison = enqueue(conn, "effect", {"poison": True}, max_attempts=3)
    total = len(plain) + len(serial) + 1
    assert total == 1001

    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_worker(db_url, log, concurrency=4) for log in logs]
    try:
        wait_for(
            lambda: count(worker_db, jobs.c.state.in_(["done", "dead"])) == total,
            timeout=90,
            what="every job finished",
        )
        assert all(p.poll() is None for p in procs), "a worker died"
    finally:
        stop_workers(procs)
    errors = [stderr_of(log) for log in logs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for text in errors:
        assert "Traceback" not in text
        assert "locked" not in text

    rows = job_rows(worker_db)
    runs = [line for line in read_log(logs) if line[0] == "run"]
    per_job = Counter(int(line[1]) for line in runs)
    assert set(per_job) == set(plain) | set(serial)
    assert set(per_job.values()) == {1}
    assert all(rows[i]["state"] == "done" and rows[i]["attempts"] == 1 for i in per_job)
    assert set(effect_rows(worker_db)) == set(per_job)
    # both processes took part
    assert len({line[3] for line in runs}) == 2

    intervals: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for line in runs:
        if line[6] != "-":
            intervals[line[6]].append((float(line[4]), float(line[5]), int(line[1])))
    assert len(intervals) == SERIAL_KEYS
    for key, spans in intervals.items():
        spans.sort()
        assert len(spans) == PER_KEY
        assert [s[2] for s in spans] == sorted(s[2] for s in spans), f"{key} ran out of order"
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert start >= end, f"two jobs of serial key {key} overlapped"

    dead = rows[poison]
    assert (dead["state"], dead["attempts"]) == ("dead", 3)
    assert "ValueError: poison pill" in dead["last_error"]
    assert "canary-7f3a" not in dead["last_error"]
