"""A stateful Hypothesis model of the queue (Q8): claims, heartbeats, acks, crashes, time."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from calbridge.jobs import Job, JobQueue, job_schedules, jobs
from calbridge.store import write
from tests.jobs.jobsupport import FakeClock

LEASE = 30.0
KINDS = ("k",)


def run_model(queue: JobQueue, clock: FakeClock) -> None:
    class QueueModel(RuleBasedStateMachine):
        """Random interleavings of workers' calls; a stale claim must never change a row."""

        def __init__(self) -> None:
            super().__init__()
            self.held: list[Job] = []
            self.enqueued = 0

        @initialize()
        def reset(self) -> None:
            with write(queue.engine) as conn:
                conn.execute(sa.delete(jobs))
                conn.execute(sa.delete(job_schedules))

        def _current(self, job: Job) -> bool:
            row = queue.get(job.id)
            assert row is not None
            return row.state == "running" and row.token == job.token

        @rule(
            coalesce=st.sampled_from([None, "a", "b"]),
            serial=st.sampled_from([None, "s"]),
            max_attempts=st.integers(1, 3),
            delay=st.sampled_from([0.0, 0.0, 20.0]),
        )
        def enqueue(
            self, coalesce: str | None, serial: str | None, max_attempts: int, delay: float
        ) -> None:
            queue.enqueue(
                "k",
                coalesce_key=coalesce,
                serial_key=serial,
                max_attempts=max_attempts,
                run_at=clock.now + delay,
            )
            self.enqueued += 1

        @rule()
        def claim(self) -> None:
            job = queue.claim(owner="w", kinds=KINDS, lease=LEASE)
            if job is not None:
                assert job.attempts <= job.max_attempts
                assert all(h.token < job.token for h in self.held if h.id == job.id)
                self.held.append(job)

        @precondition(lambda self: self.held)
        @rule(i=st.integers(0, 100))
        def heartbeat(self, i: int) -> None:
            job = self.held[i % len(self.held)]
            expected = self._current(job)
            assert queue.heartbeat(job, lease=LEASE) == expected

        @precondition(lambda self: self.held)
        @rule(i=st.integers(0, 100))
        def ack(self, i: int) -> None:
            job = self.held.pop(i % len(self.held))
            expected = self._current(job)
            assert queue.complete(job) == expected

        @precondition(lambda self: self.held)
        @rule(i=st.integers(0, 100), counts=st.booleans(), backoff=st.sampled_from([0, 5, 60]))
        def fail(self, i: int, counts: bool, backoff: float) -> None:
            job = self.held.pop(i % len(self.held))
            expected = self._current(job)
            state = queue.fail(job, error="boom", retry_at=clock.now + backoff, counts=counts)
            assert (state is not None) == expected

        @precondition(lambda self: self.held)
        @rule(i=st.integers(0, 100))
        def crash(self, i: int) -> None:
            self.held.pop(i % len(self.held))

        @precondition(lambda self: self.held)
        @rule(i=st.integers(0, 100))
        def release(self, i: int) -> None:
            job = self.held.pop(i % len(self.held))
            expected = self._current(job)
            assert queue.release(job) == expected

        @rule(seconds=st.sampled_from([1.0, 10.0, 31.0]))
        def advance(self, seconds: float) -> None:
            clock.advance(seconds)

        @invariant()
        def database_invariants(self) -> None:
            with queue.engine.connect() as conn:
                rows = conn.execute(sa.select(jobs)).all()
            for r in rows:
                assert 0 <= r.attempts <= r.max_attempts
            running_serial = [r.serial_key for r in rows if r.state == "running" and r.serial_key]
            assert len(running_serial) == len(set(running_serial))
            queued_keys = [r.coalesce_key for r in rows if r.state == "queued" and r.coalesce_key]
            assert len(queued_keys) == len(set(queued_keys))

        def teardown(self) -> None:
            # quiescence: crash every holder, let leases expire, drain with honest workers
            for _ in range(200):
                clock.advance(LEASE + 100)
                job = queue.claim(owner="drain", kinds=KINDS, lease=LEASE)
                if job is None and not any(
                    j.state in ("queued", "running") for j in queue.jobs(limit=1000)
                ):
                    break
                if job is not None:
                    assert queue.complete(job)
            states = {j.state for j in queue.jobs(limit=1000)}
            assert states <= {"done", "dead", "merged"}

    run_state_machine_as_test(
        QueueModel,
        settings=settings(max_examples=15, stateful_step_count=25, deadline=None),
    )


def test_queue_model(queue: JobQueue, clock: FakeClock) -> None:
    """At most one valid lease per job, attempts within bounds, every job ends done or dead."""
    run_model(queue, clock)
