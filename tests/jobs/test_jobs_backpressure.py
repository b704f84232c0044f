"""A 429 is back-pressure, not a failure: a throttled job is rescheduled without using an
attempt, after Retry-After when given, else after a backoff that grows per 429 in a row."""

from __future__ import annotations

import pytest

from calbridge.errors import RateLimited
from calbridge.jobs import HandlerRegistry, Job, JobQueue, Worker
from calbridge.jobs._worker import (
    RATE_LIMIT_BASE,
    RATE_LIMIT_CAP,
    rate_limit_backoff,
    rate_limit_streak,
)
from tests.jobs.jobsupport import FakeClock


def make_worker(queue: JobQueue, handlers: HandlerRegistry) -> Worker:
    return Worker(queue, handlers, poll_interval=0.01, schedule_interval=None)


def throttling(retry_after: float | None, times: int, calls: list[int]) -> HandlerRegistry:
    handlers = HandlerRegistry()

    @handlers.handler("k")
    async def throttled(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) <= times:
            raise RateLimited("slow down", provider="cronofy", retry_after=retry_after)

    return handlers


async def test_retry_after_reschedules_twenty_times_without_an_attempt(
    queue: JobQueue, clock: FakeClock
) -> None:
    calls: list[int] = []
    worker = make_worker(queue, throttling(7, 20, calls))
    job_id = queue.enqueue("k", max_attempts=2)
    for n in range(1, 21):
        assert await worker.run_until_idle() == 1
        job = queue.get(job_id)
        assert job is not None
        assert (job.state, job.attempts) == ("queued", 0)
        assert job.run_at == clock.now + 7  # exactly Retry-After, no jitter
        assert job.last_error is not None
        assert rate_limit_streak(job.last_error) == n
        assert "RateLimited" in job.last_error
        assert await worker.run_until_idle() == 0  # not due before Retry-After
        clock.advance(7)
    assert await worker.run_until_idle() == 1
    done = queue.get(job_id)
    assert done is not None
    assert (done.state, done.attempts) == ("done", 1)
    assert calls == [1] * 21


async def test_without_retry_after_the_backoff_grows_per_429_in_a_row(
    queue: JobQueue, clock: FakeClock
) -> None:
    calls: list[int] = []
    worker = make_worker(queue, throttling(None, 20, calls))
    job_id = queue.enqueue("k", max_attempts=1)
    delays: list[float] = []
    for n in range(1, 21):
        assert await worker.run_until_idle() == 1
        job = queue.get(job_id)
        assert job is not None
        assert (job.state, job.attempts) == ("queued", 0), n
        assert rate_limit_streak(job.last_error) == n
        delay = job.run_at - clock.now
        base = min(RATE_LIMIT_CAP, RATE_LIMIT_BASE * 2 ** (n - 1))
        assert base / 2 - 0.01 <= delay <= base + 0.01, (n, delay)
        delays.append(delay)
        clock.advance(delay)
    assert delays[-1] >= RATE_LIMIT_CAP / 2  # capped, still jittered
    assert max(delays) <= RATE_LIMIT_CAP + 0.01
    assert await worker.run_until_idle() == 1
    done = queue.get(job_id)
    assert done is not None
    assert (done.state, done.attempts) == ("done", 1)  # max_attempts=1 was never used up


async def test_the_streak_restarts_after_a_run_that_was_not_throttled(
    queue: JobQueue, clock: FakeClock
) -> None:
    """429, 429, a real failure (counts, backoff), then a 429 starts a new streak at 5 s."""
    handlers = HandlerRegistry()
    calls: list[int] = []

    @handlers.handler("k")
    async def mixed(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 3:
            raise RuntimeError("boom")
        if len(calls) <= 4:
            raise RateLimited("slow down", provider="google")

    worker = Worker(
        queue, handlers, poll_interval=0.01, schedule_interval=None, backoff=lambda _a: 1.0
    )
    job_id = queue.enqueue("k", max_attempts=3)
    states = []
    for _ in range(5):
        assert await worker.run_until_idle() == 1
        job = queue.get(job_id)
        assert job is not None
        states.append((job.state, job.attempts, rate_limit_streak(job.last_error)))
        clock.advance(max(0.0, job.run_at - clock.now))
    assert states == [
        ("queued", 0, 1),
        ("queued", 0, 2),
        ("queued", 1, 0),  # the failure used an attempt and ended the streak
        ("queued", 1, 1),
        ("done", 2, 1),
    ]


@pytest.mark.parametrize("streak", [0, 1, 2, 5, 30])
def test_rate_limit_backoff_bounds(streak: int) -> None:
    base = min(RATE_LIMIT_CAP, RATE_LIMIT_BASE * 2 ** (max(streak, 1) - 1))
    for _ in range(50):
        assert base / 2 <= rate_limit_backoff(streak) <= base
