"""The queue's operations with a fake clock, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from calbridge import Secret
from calbridge.jobs import Job, JobQueue, LeaseLost, enqueue, job_schedules, jobs, remove_schedule
from calbridge.store import metadata, read, write
from calbridge.store.jobs import may_claim
from tests.jobs.jobsupport import FakeClock, count

LEASE = 30.0
WEEK = 7 * 24 * 3600.0


def claim(queue: JobQueue, owner: str = "w1", kinds: tuple[str, ...] = ("k",)) -> Job | None:
    return queue.claim(owner=owner, kinds=kinds, lease=LEASE)


def test_enqueue_claim_complete(queue: JobQueue) -> None:
    """A job goes queued -> running (token 1, attempt 1) -> done."""
    job_id = queue.enqueue("k", {"a": 1})

    job = claim(queue)

    assert job is not None
    assert (job.id, job.state, job.attempts, job.token, job.payload) == (
        job_id,
        "running",
        1,
        1,
        {"a": 1},
    )
    assert claim(queue) is None
    assert queue.complete(job)
    done = queue.get(job_id)
    assert done is not None
    assert done.state == "done"


def test_payload_must_be_plain_json(queue: JobQueue) -> None:
    """A Secret (or anything not JSON) cannot be put in a payload."""
    with pytest.raises(TypeError, match="JSON"):
        queue.enqueue("k", {"token": Secret("canary")})
    with pytest.raises(ValueError, match="max_attempts"):
        queue.enqueue("k", max_attempts=0)


def test_workers_claim_only_their_kinds_and_queues(queue: JobQueue) -> None:
    """Jobs of a kind nobody handles wait; queues partition the work."""
    queue.enqueue("other")
    queue.enqueue("k", queue="slow")

    assert claim(queue) is None
    job = queue.claim(owner="w", kinds=["k"], queues=["slow"], lease=LEASE)
    assert job is not None
    assert job.queue == "slow"


def test_priority_then_run_at_then_id(queue: JobQueue, clock: FakeClock) -> None:
    """Lower priority values run first; among equals, the earliest due."""
    a = queue.enqueue("k", run_at=clock.now - 10)
    b = queue.enqueue("k", priority=-1)
    c = queue.enqueue("k", run_at=clock.now - 20)

    order = [j.id for j in iter(lambda: claim(queue), None)]

    assert order == [b, c, a]


def test_scheduled_job_waits_for_run_at(queue: JobQueue, clock: FakeClock) -> None:
    """run_at (epoch seconds or an aware datetime) holds the job back until due."""
    queue.enqueue("k", run_at=clock.now + 60)
    queue.enqueue("k", run_at=datetime.fromtimestamp(clock.now + 120, UTC))
    with pytest.raises(ValueError, match="timezone"):
        queue.enqueue("k", run_at=datetime(2030, 1, 1))

    assert claim(queue) is None
    clock.advance(60)
    assert claim(queue) is not None
    assert claim(queue) is None
    clock.advance(60)
    assert claim(queue) is not None


def test_stale_token_changes_nothing(queue: JobQueue, clock: FakeClock) -> None:
    """Fencing: after the lease passes to another worker, the old holder's calls are no-ops."""
    queue.enqueue("k")
    old = claim(queue, "w1")
    assert old is not None
    clock.advance(LEASE + 1)
    new = claim(queue, "w2")
    assert new is not None
    assert (new.id, new.token, new.attempts) == (old.id, 2, 2)

    assert not queue.complete(old)
    assert not queue.heartbeat(old, lease=LEASE)
    assert queue.fail(old, error="x", retry_at=clock.now) is None
    assert not queue.release(old)
    with write(queue.engine) as conn, pytest.raises(LeaseLost, match="stale"):
        queue.assert_lease(conn, old)
    current = queue.get(old.id)
    assert current is not None
    assert (current.state, current.token) == ("running", 2)
    assert queue.complete(new)


def test_heartbeat_keeps_the_lease(queue: JobQueue, clock: FakeClock) -> None:
    """A renewed lease is not taken over."""
    queue.enqueue("k")
    job = claim(queue)
    assert job is not None
    for _ in range(3):
        clock.advance(LEASE - 1)
        assert queue.heartbeat(job, lease=LEASE)
        assert claim(queue, "thief") is None


def test_expired_lease_on_last_attempt_goes_dead(queue: JobQueue, clock: FakeClock) -> None:
    """A job whose worker keeps dying is dead-lettered instead of looping."""
    job_id = queue.enqueue("k", max_attempts=2)
    for _ in range(2):
        assert claim(queue) is not None
        clock.advance(LEASE + 1)

    assert claim(queue) is None
    dead = queue.get(job_id)
    assert dead is not None
    assert dead.state == "dead"
    assert dead.last_error is not None
    assert "lease expired" in dead.last_error


def test_release_gives_the_job_back_at_once(queue: JobQueue) -> None:
    """A released job (shutdown) is claimed again immediately; the claim does not count."""
    queue.enqueue("k", serial_key="s")
    job = claim(queue, "w1")
    assert job is not None

    assert queue.release(job)
    again = claim(queue, "w2")

    assert again is not None
    assert (again.id, again.attempts, again.token) == (job.id, 1, 2)


def test_serial_key_runs_one_at_a_time(queue: JobQueue) -> None:
    """Jobs sharing a serial key never run at once; other jobs pass them."""
    a = queue.enqueue("k", serial_key="acct-1")
    b = queue.enqueue("k", serial_key="acct-1")
    c = queue.enqueue("k", serial_key="acct-2")

    first = claim(queue)
    second = claim(queue)
    assert first is not None
    assert second is not None
    assert (first.id, second.id) == (a, c)
    assert claim(queue) is None
    assert queue.complete(first)
    third = claim(queue)
    assert third is not None
    assert third.id == b


def test_coalescing_storm_leaves_one_queued_and_one_running(queue: JobQueue) -> None:
    """1,000 enqueues (2 threads) for one key while its job runs: one running, one queued (W12)."""
    key = "sync:acct-1:cal-1"
    first = queue.enqueue("k", {"cal": "cal-1"}, coalesce_key=key)
    running = claim(queue)
    assert running is not None
    assert running.id == first

    with ThreadPoolExecutor(2) as pool:
        ids = set(pool.map(lambda _: queue.enqueue("k", coalesce_key=key), range(1000)))

    assert len(ids) == 1
    assert ids != {first}
    assert count(queue.engine, jobs.c.state == "queued") == 1
    assert count(queue.engine, jobs.c.state == "running") == 1
    assert claim(queue) is None, "the coalesced job must wait for the running one"
    assert queue.complete(running)
    follow_up = claim(queue)
    assert follow_up is not None
    assert follow_up.id in ids


def test_coalescing_keeps_the_earliest_run_at_and_best_priority(
    queue: JobQueue, clock: FakeClock
) -> None:
    """A coalesced enqueue can pull the queued job forward, never push it back."""
    job_id = queue.enqueue("k", coalesce_key="c", run_at=clock.now + 3600)
    assert queue.enqueue("k", coalesce_key="c", run_at=clock.now + 60, priority=-5) == job_id
    assert queue.enqueue("k", coalesce_key="c", run_at=clock.now + 7200) == job_id

    job = queue.get(job_id)
    assert job is not None
    assert (job.run_at, job.priority) == (clock.now + 60, -5)


def test_enqueue_joins_the_callers_transaction(queue: JobQueue) -> None:
    """Enqueue inside a transaction that rolls back leaves no job (transactional outbox)."""

    def rolled_back() -> None:
        with write(queue.engine) as conn:
            enqueue(conn, "k", coalesce_key="c")
            raise RuntimeError("the inbox insert failed")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert count(queue.engine) == 0

    with write(queue.engine) as conn:
        enqueue(conn, "k", coalesce_key="c")
        enqueue(conn, "k", coalesce_key="c")
    assert count(queue.engine) == 1


def test_failure_retries_then_dies_keeping_the_error(queue: JobQueue, clock: FakeClock) -> None:
    """A counted failure requeues at retry_at until the last attempt, then dead."""
    job_id = queue.enqueue("k", max_attempts=2)
    job = claim(queue)
    assert job is not None
    assert queue.fail(job, error="boom 1", retry_at=clock.now + 10) == "queued"
    assert claim(queue) is None
    clock.advance(10)
    job = claim(queue)
    assert job is not None
    assert job.attempts == 2

    assert queue.fail(job, error="boom 2", retry_at=clock.now + 10) == "dead"
    dead = queue.get(job_id)
    assert dead is not None
    assert (dead.state, dead.last_error) == ("dead", "boom 2")
    assert queue.retry_dead(job_id)
    assert claim(queue) is not None


def test_retry_later_gives_the_attempt_back(queue: JobQueue, clock: FakeClock) -> None:
    """counts=False reschedules without using up an attempt, even on the last one."""
    job_id = queue.enqueue("k", max_attempts=1)
    job = claim(queue)
    assert job is not None

    assert queue.fail(job, error="throttled", retry_at=clock.now + 120, counts=False) == "queued"
    again = queue.get(job_id)
    assert again is not None
    assert (again.attempts, again.run_at) == (0, clock.now + 120)


def test_failed_job_merges_into_its_queued_twin(queue: JobQueue, clock: FakeClock) -> None:
    """A failing coalesced job hands over to the twin queued meanwhile (one queued job)."""
    a = queue.enqueue("k", coalesce_key="c")
    job = claim(queue)
    assert job is not None
    b = queue.enqueue("k", coalesce_key="c")

    assert queue.fail(job, error="boom", retry_at=clock.now + 30) == "merged"
    twin = queue.get(b)
    merged = queue.get(a)
    assert twin is not None
    assert merged is not None
    assert merged.state == "merged"
    assert (twin.state, twin.attempts, twin.run_at, twin.last_error) == (
        "queued",
        1,
        clock.now + 30,
        "boom",
    )


def test_recurring_job_runs_once_per_interval(queue: JobQueue, clock: FakeClock) -> None:
    """A schedule enqueues when due; missed runs collapse into one; updates are idempotent."""
    queue.ensure_schedule("reconcile", "k", {"scope": "all"}, every=timedelta(weeks=1))
    start = clock.now

    first = queue.enqueue_due_schedules()
    assert len(first) == 1
    assert queue.enqueue_due_schedules() == []
    clock.advance(3 * WEEK + 5)
    # the first run never happened: the new one coalesces into it
    assert queue.enqueue_due_schedules() == first
    queue.ensure_schedule("reconcile", "k", {"scope": "all"}, every=timedelta(weeks=1))
    with queue.engine.connect() as conn:
        next_ms = conn.execute(sa.select(job_schedules.c.next_run_ms)).scalar_one()
    assert next_ms == round((start + 4 * WEEK) * 1000)

    job = claim(queue)
    assert job is not None
    assert (job.payload, job.coalesce_key) == ({"scope": "all"}, "schedule:reconcile")
    assert queue.complete(job)
    clock.advance(WEEK)
    assert len(queue.enqueue_due_schedules()) == 1
    assert count(queue.engine, jobs.c.state == "queued") == 1


def test_schedules_due_are_enqueued_once_by_concurrent_workers(
    queue: JobQueue, clock: FakeClock
) -> None:
    """Several workers checking schedules at the same moment enqueue one job."""
    queue.ensure_schedule("renew", "k", every=3600, first_run_at=clock.now + 10)
    clock.advance(10)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: queue.enqueue_due_schedules(), range(8)))

    assert sum(len(r) for r in results) == 1
    assert count(queue.engine) == 1


def test_prune_deletes_old_finished_jobs(queue: JobQueue, clock: FakeClock) -> None:
    """Done jobs older than the cut-off go; others stay."""
    queue.enqueue("k")
    queue.enqueue("k")
    job = claim(queue)
    assert job is not None
    assert queue.complete(job)
    clock.advance(3600)

    assert queue.prune(older_than=timedelta(minutes=30)) == 1
    assert count(queue.engine) == 1
    assert queue.stats() == {"default": {"queued": 1}}


def test_migration_matches_the_tables(engine: sa.Engine) -> None:
    """0002_jobs creates exactly what calbridge.jobs defines (no autogenerate diff)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, metadata)
    ours = [d for d in diff if "job" in repr(d)]
    assert ours == []


def test_retry_dead_defers_to_a_queued_twin(queue: JobQueue) -> None:
    """A dead coalesced job is not requeued while a job of its key is queued."""
    job_id = queue.enqueue("k", coalesce_key="c")
    job = claim(queue)
    assert job is not None
    assert queue.fail(job, error="boom", retry_at=None) == "dead"
    queue.enqueue("k", coalesce_key="c")

    assert not queue.retry_dead(job_id)
    assert not queue.retry_dead(10_000)
    assert count(queue.engine, jobs.c.state == "queued") == 1


def test_remove_schedule(queue: JobQueue) -> None:
    """A removed schedule enqueues nothing more."""
    queue.ensure_schedule("renew", "k", every=60)
    with write(queue.engine) as conn:
        assert remove_schedule(conn, "renew")
        assert not remove_schedule(conn, "renew")

    assert queue.enqueue_due_schedules() == []


def test_ack_and_claim_next_in_one_transaction(queue: JobQueue, clock: FakeClock) -> None:
    """complete_and_claim acks (fenced) and hands over the next job in one commit."""
    queue.enqueue("k")
    second = queue.enqueue("k")
    third = queue.enqueue("k")
    job = claim(queue)
    assert job is not None

    acked, following = queue.complete_and_claim(job, owner="w1", kinds=["k"], lease=LEASE)
    assert acked
    assert following is not None
    assert following.id == second

    clock.advance(LEASE + 1)
    stolen = claim(queue, "w2")
    assert stolen is not None
    assert stolen.id == second
    acked, following = queue.complete_and_claim(following, owner="w1", kinds=["k"], lease=LEASE)
    assert not acked
    assert following is not None
    assert following.id == third


def test_may_claim_precheck(queue: JobQueue, clock: FakeClock) -> None:
    """The read-only pre-check sees due jobs and expired leases, and nothing else."""

    def may() -> bool:
        with read(queue.engine) as conn:
            return may_claim(conn, kinds=["k"], queues=["default"], now=clock.now)

    assert not may()
    queue.enqueue("k", run_at=clock.now + 10)
    queue.enqueue("other")
    assert not may()
    clock.advance(10)
    assert may()
    job = claim(queue)
    assert job is not None
    assert not may()
    clock.advance(LEASE)
    assert may()
