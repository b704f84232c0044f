"""Queue hardening at scale: leases on the database's clock, one claimer per worker woken
by NOTIFY (PostgreSQL) or in-process enqueues, several jobs per claim, pruning on a
schedule in bounded batches."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from calbridge.jobs import PRUNE_KIND, HandlerRegistry, Job, JobQueue, Worker, job_schedules
from calbridge.store import create_engine, is_postgres, read
from tests.jobs.jobsupport import (
    FakeClock,
    effect_rows,
    effects_metadata,
    job_rows,
    start_worker,
    stderr_of,
    stop_workers,
    wait_for,
)

DAY = 24 * 3600.0


@contextmanager
def statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs meanwhile (SQLite's own ``BEGIN`` left out)."""
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith("BEGIN"):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


async def wait_async(predicate: Any, *, within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- the database's clock


@pytest.mark.postgres
@pytest.mark.slow
def test_skewed_worker_neither_steals_a_live_lease_nor_keeps_a_dead_one(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    """A worker whose host clock runs an hour ahead (PostgreSQL): it leaves another
    worker's live lease alone, and its own lease ends `lease` seconds after it dies by
    the database's clock, not an hour later."""
    engine = create_engine(fresh_postgres_url, upgrade=True)
    effects_metadata.create_all(engine)
    honest = JobQueue(engine)  # this process's clock is right
    try:
        live = honest.enqueue("effect")
        held = honest.claim(owner="honest", kinds=["effect"], lease=60)
        assert held is not None
        assert held.id == live
        log = tmp_path / "skewed.log"
        proc = start_worker(
            fresh_postgres_url, log, concurrency=2, lease=2, env={"JOBS_TEST_CLOCK_SKEW": "3600"}
        )
        try:
            quick = honest.enqueue("effect")
            slow = honest.enqueue("effect", {"sleep": 600})
            wait_for(
                lambda: (
                    quick in effect_rows(engine)
                    and str(proc.pid) in str(job_rows(engine)[slow]["lease_owner"])
                ),
                timeout=30,
                what=f"the skewed worker to run its jobs ({stderr_of(log)})",
            )
            # the live lease was not taken over by the worker that thinks it is an hour later
            row = job_rows(engine)[live]
            assert (row["state"], row["lease_token"]) == ("running", 1)
            assert row["lease_owner"] == "honest"
            # the skewed worker's own lease runs on the database's clock
            expires_in = job_rows(engine)[slow]["lease_expires_ms"] / 1000 - time.time()
            assert expires_in < 30
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            stop_workers([proc])
        taken: list[Job] = []

        def take_over() -> bool:
            job = honest.claim(owner="honest", kinds=["effect"], lease=60)
            if job is not None:
                taken.append(job)
            return bool(taken)

        wait_for(take_over, timeout=20, what="the dead worker's lease to run out")
        assert (taken[0].id, taken[0].token) == (slow, 2)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- waking up


async def test_an_enqueued_job_starts_well_within_the_poll_interval(
    engine: sa.Engine, db_url: str
) -> None:
    """With a 5 s poll interval, a job enqueued while the worker idles starts within 1 s:
    woken by NOTIFY from another connection on PostgreSQL, by the queue's own enqueue on
    SQLite."""
    queue = JobQueue(engine)
    started: list[float] = []
    handlers = HandlerRegistry()

    @handlers.handler("k")
    async def note(job: Job) -> None:
        started.append(time.monotonic())

    worker = Worker(queue, handlers, poll_interval=5.0, schedule_interval=None)
    runner = asyncio.create_task(worker.run())
    other = create_engine(db_url) if is_postgres(engine) else None
    try:
        if other is not None:
            await wait_async(lambda: worker.listening, what="the LISTEN connection")
        await asyncio.sleep(0.5)  # the worker's first look found nothing: it idles now
        enqueuer = JobQueue(other) if other is not None else queue
        for n in (1, 2):
            at = time.monotonic()
            await asyncio.to_thread(enqueuer.enqueue, "k")
            await wait_async(lambda n=n: len(started) >= n, what="the job to start")
            assert started[-1] - at < 1.0
            await asyncio.sleep(0.3)
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)
        if other is not None:
            other.dispose()


async def test_an_idle_worker_polls_once_per_interval_not_once_per_slot(
    engine: sa.Engine,
) -> None:
    """Eight idle slots cost one statement per poll interval, not eight."""
    queue = JobQueue(engine)
    handlers = HandlerRegistry({"k": lambda job: asyncio.sleep(0)})
    worker = Worker(queue, handlers, concurrency=8, poll_interval=0.2, schedule_interval=None)
    runner = asyncio.create_task(worker.run())
    try:
        if is_postgres(engine):
            await wait_async(lambda: worker.listening, what="the LISTEN connection")
        await asyncio.sleep(0.5)
        with statements(engine) as seen:
            await asyncio.sleep(2.0)
        # about 10 polls of one statement each; every slot polling would be 80+
        assert 4 <= len(seen) <= 14, seen
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)


@pytest.mark.postgres
async def test_a_lost_listen_connection_falls_back_to_polling_and_reconnects(
    fresh_postgres_url: str,
) -> None:
    """When the LISTEN connection is killed, jobs still start (at the poll interval) and
    the worker listens again."""
    engine = create_engine(fresh_postgres_url, upgrade=True)
    queue = JobQueue(engine)
    done: list[int] = []
    handlers = HandlerRegistry()

    @handlers.handler("k")
    async def note(job: Job) -> None:
        done.append(job.id)

    worker = Worker(queue, handlers, poll_interval=0.3, schedule_interval=None)
    runner = asyncio.create_task(worker.run())
    try:
        await wait_async(lambda: worker.listening, what="the LISTEN connection")
        with engine.begin() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            ).scalar_one()
        assert killed == 1
        job_id = await asyncio.to_thread(JobQueue(engine).enqueue, "k")
        await wait_async(lambda: job_id in done, what="the job to run by polling")
        await wait_async(lambda: worker.listening, within=15, what="listening again")
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)
        engine.dispose()


# ---------------------------------------------------------------- claiming several


def test_one_claim_takes_several_jobs_in_one_update(queue: JobQueue) -> None:
    """claim_many takes up to `limit` due jobs in one UPDATE, in order, the first job of
    a serial key only."""
    a = queue.enqueue("k", serial_key="s")
    queue.enqueue("k", serial_key="s")
    c = queue.enqueue("k", priority=-1)
    d = queue.enqueue("k")
    with statements(queue.engine) as seen:
        got = queue.claim_many(owner="w", kinds=["k"], lease=30, limit=5)
    assert [j.id for j in got] == [c, a, d]
    assert all(j.state == "running" and j.token == 1 for j in got)
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in seen) == 1


# ---------------------------------------------------------------- pruning


def finish(queue: JobQueue, n: int, *, dead: bool = False) -> list[int]:
    ids = [queue.enqueue("k") for _ in range(n)]
    for _ in ids:
        job = queue.claim(owner="w", kinds=["k"], lease=30)
        assert job is not None
        if dead:
            assert queue.fail(job, error="boom", retry_at=None) == "dead"
        else:
            assert queue.complete(job)
    return ids


def test_prune_deletes_in_bounded_batches(queue: JobQueue, clock: FakeClock) -> None:
    """Five old done jobs with batch=2: three short DELETE transactions; dead jobs only
    when named."""
    finish(queue, 5)
    dead = finish(queue, 1, dead=True)
    clock.advance(3600)
    recent = finish(queue, 1)

    with statements(queue.engine) as seen:
        assert queue.prune(older_than=60, batch=2) == 5
    assert sum(s.lstrip().upper().startswith("DELETE") for s in seen) == 3
    assert set(job_rows(queue.engine)) == {*dead, *recent}
    assert queue.prune(older_than=60, states=["dead"]) == 1
    with pytest.raises(ValueError, match="finished"):
        queue.prune(older_than=60, states=["queued"])


async def test_workers_prune_finished_jobs_on_their_own(queue: JobQueue, clock: FakeClock) -> None:
    """No operator action: a worker schedules the built-in prune job, which deletes done
    jobs past the retention and keeps recent ones and dead ones."""
    old = finish(queue, 3)
    dead = finish(queue, 1, dead=True)
    clock.advance(8 * DAY)
    recent = finish(queue, 1)
    handlers = HandlerRegistry({"k": lambda job: asyncio.sleep(0)})
    worker = Worker(queue, handlers, poll_interval=0.05, schedule_interval=0.05)
    runner = asyncio.create_task(worker.run())
    try:
        await wait_async(
            lambda: not set(old) & set(job_rows(queue.engine)), what="the old jobs to go"
        )
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 10)
    rows = job_rows(queue.engine)
    assert set(dead) | set(recent) <= set(rows)
    assert [r["kind"] for r in rows.values() if r["kind"] == PRUNE_KIND]
    with read(queue.engine) as conn:
        schedule = conn.execute(sa.select(job_schedules.c.kind, job_schedules.c.payload)).one()
    assert schedule.kind == PRUNE_KIND
    assert schedule.payload == {"retention": 7 * DAY, "dead_retention": None}
