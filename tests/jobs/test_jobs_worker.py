"""The worker in-process (fake clock) and ``calbridge worker`` as a subprocess (SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from calbridge.cli import main as cli
from calbridge.errors import ConfigurationError, RateLimited
from calbridge.jobs import HandlerRegistry, Job, JobQueue, RetryLater, Worker, jobs, load_handlers
from tests.jobs.jobsupport import FakeClock, count, job_rows, wait_for

CALBRIDGE = str(Path(sys.executable).parent / "calbridge")
HANDLERS = "tests.jobs.jobshandlers:handlers"


def make_worker(queue: JobQueue, handlers: HandlerRegistry, **options: object) -> Worker:
    opts: dict[str, object] = {
        "poll_interval": 0.01,
        "schedule_interval": None,
        "backoff": lambda attempt: 10.0 * attempt,
    }
    opts.update(options)
    return Worker(queue, handlers, **opts)  # type: ignore[arg-type]


async def wait_async(predicate: object) -> None:
    deadline = time.monotonic() + 10
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_failures_back_off_then_dead_letter_without_secrets(
    queue: JobQueue, clock: FakeClock
) -> None:
    """Each failure waits backoff(attempt); the last one leaves a dead job with scrubbed text."""
    handlers = HandlerRegistry()

    @handlers.handler("k")
    async def boom(job: Job) -> None:
        raise RuntimeError(
            "upstream refused Bearer abc.def-SECRET at https://x.example/cb?code=CODE123"
        )

    job_id = queue.enqueue("k", max_attempts=3)
    worker = make_worker(queue, handlers)

    assert await worker.run_until_idle() == 1
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.run_at) == ("queued", 1, clock.now + 10)
    assert await worker.run_until_idle() == 0
    clock.advance(10)
    assert await worker.run_until_idle() == 1
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.run_at) == ("queued", 2, clock.now + 20)
    clock.advance(20)
    assert await worker.run_until_idle() == 1

    dead = queue.get(job_id)
    assert dead is not None
    assert (dead.state, dead.attempts) == ("dead", 3)
    assert dead.last_error is not None
    assert "RuntimeError: upstream refused" in dead.last_error
    assert "Traceback" in dead.last_error
    for secret in ("abc.def-SECRET", "CODE123"):
        assert secret not in dead.last_error


@pytest.mark.parametrize(
    "signal_",
    [RetryLater(30, "provider paused"), RateLimited("slow down", provider="g", retry_after=30)],
    ids=["RetryLater", "RateLimited"],
)
async def test_retry_later_signal_reschedules_without_counting(
    queue: JobQueue, clock: FakeClock, signal_: Exception
) -> None:
    """RetryLater / RateLimited(retry_after) reschedule at the delay; no attempt is used up."""
    handlers = HandlerRegistry()
    calls: list[int] = []

    @handlers.handler("k")
    async def throttled(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise signal_

    job_id = queue.enqueue("k", max_attempts=1)
    worker = make_worker(queue, handlers)

    await worker.run_until_idle()
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.run_at) == ("queued", 0, clock.now + 30)
    clock.advance(30)
    await worker.run_until_idle()
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.attempts) == ("done", 1)
    assert calls == [1, 1]


async def test_ack_after_lost_lease_is_refused(queue: JobQueue, clock: FakeClock) -> None:
    """A handler that returns after its job was taken over acks nothing."""
    handlers = HandlerRegistry()
    events: list[tuple[str, int]] = []

    @handlers.handler("k")
    async def stalls(job: Job) -> None:
        clock.advance(1000)  # as if the process had been stopped past its lease
        thief = await asyncio.to_thread(queue.claim, owner="thief", kinds=["k"], lease=60)
        assert thief is not None
        assert thief.token == job.token + 1

    job_id = queue.enqueue("k")
    worker = make_worker(queue, handlers, observer=lambda e, j: events.append((e, j.token)))

    await worker.run_until_idle()

    assert ("lost", 1) in events
    assert ("acked", 1) not in events
    job = queue.get(job_id)
    assert job is not None
    assert (job.state, job.token) == ("running", 2)


async def test_lost_heartbeat_cancels_the_handler(queue: JobQueue, clock: FakeClock) -> None:
    """When a heartbeat finds the lease gone, the handler is cancelled and nothing is acked."""
    handlers = HandlerRegistry()
    started, cancelled = asyncio.Event(), asyncio.Event()
    events: list[str] = []

    @handlers.handler("k")
    async def forever(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    queue.enqueue("k")
    worker = make_worker(
        queue, handlers, lease=5, heartbeat=0.02, observer=lambda e, j: events.append(e)
    )
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    for _ in range(100):  # a heartbeat may renew the lease between the two steps: again
        clock.advance(6)
        if await asyncio.to_thread(queue.claim, owner="thief", kinds=["k"], lease=60):
            break
    else:
        raise AssertionError("the lease was never taken over")

    await asyncio.wait_for(cancelled.wait(), 10)
    await wait_async(lambda: "lost" in events)
    worker.stop()
    await asyncio.wait_for(runner, 10)
    assert "acked" not in events


async def test_stop_lets_running_jobs_finish(queue: JobQueue) -> None:
    """stop(): no new claims; the running job finishes within the grace period."""
    handlers = HandlerRegistry()
    started = asyncio.Event()

    @handlers.handler("k")
    async def short(job: Job) -> None:
        started.set()
        await asyncio.sleep(0.2)

    first = queue.enqueue("k", serial_key="s")
    second = queue.enqueue("k", serial_key="s")
    worker = make_worker(queue, handlers, grace=10)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)

    worker.stop()
    await asyncio.wait_for(runner, 10)

    rows = job_rows(queue.engine)
    assert rows[first]["state"] == "done"
    assert rows[second]["state"] == "queued"


async def test_stop_releases_jobs_that_outlive_the_grace_period(
    queue: JobQueue, clock: FakeClock
) -> None:
    """Past the grace period the handler is cancelled and the job released for others."""
    handlers = HandlerRegistry()
    started = asyncio.Event()

    @handlers.handler("k")
    async def long(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    job_id = queue.enqueue("k")
    worker = make_worker(queue, handlers, grace=0.05)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)

    worker.stop()
    await asyncio.wait_for(runner, 10)

    again = queue.claim(owner="other", kinds=["k"], lease=60)
    assert again is not None
    assert (again.id, again.attempts, again.token) == (job_id, 1, 2)


async def test_cancelled_worker_releases_its_jobs(queue: JobQueue) -> None:
    """Cancelling Worker.run() cancels the handlers and gives their jobs back."""
    handlers = HandlerRegistry()
    started, cancelled = asyncio.Event(), asyncio.Event()

    @handlers.handler("k")
    async def long(job: Job) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    job_id = queue.enqueue("k")
    runner = asyncio.create_task(make_worker(queue, handlers).run())
    await asyncio.wait_for(started.wait(), 10)

    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner

    assert cancelled.is_set()
    again = queue.claim(owner="other", kinds=["k"], lease=60)
    assert again is not None
    assert (again.id, again.attempts) == (job_id, 1)


async def test_stop_before_run_is_not_lost(queue: JobQueue) -> None:
    """A stop requested before run() starts (an early SIGTERM) ends run() at once."""
    queue.enqueue("k")
    handlers = HandlerRegistry({"k": lambda job: asyncio.sleep(0)})
    worker = make_worker(queue, handlers)

    worker.stop()
    await asyncio.wait_for(worker.run(), 10)

    assert queue.stats() == {"default": {"queued": 1}}


def test_handler_registry_and_loader() -> None:
    """One handler per kind; handler paths must name a HandlerRegistry."""
    registry = load_handlers([HANDLERS], builtins=False)
    assert registry.kinds() == ("slow", "whoami")
    with pytest.raises(ValueError, match="already has a handler"):
        registry.add("slow", lambda job: asyncio.sleep(0))
    for bad in ("tests.jobs.jobshandlers", "tests.jobs.jobshandlers:not_a_registry", "nope:x"):
        with pytest.raises(ConfigurationError):
            load_handlers([bad], builtins=False)


def test_handler_factory_gets_the_queue(queue: JobQueue) -> None:
    """A callable handler path is called with the JobQueue."""
    registry = load_handlers(
        [HANDLERS, "tests.jobs.jobshandlers:factory"], queue=queue, builtins=False
    )
    assert registry.kinds() == ("from-factory", "slow", "whoami")


# ---------------------------------------------------------------- the command


def start_cli_worker(url: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            CALBRIDGE,
            "worker",
            "--database-url",
            url,
            "--handlers",
            HANDLERS,
            "--poll-interval",
            "0.05",
            *list(args),
        ],
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_sigterm_finishes_the_running_job_and_exits(
    engine: sa.Engine, db_url: str, tmp_path: Path
) -> None:
    """SIGTERM: the worker stops claiming, lets the running job finish, exits 0 (Q7).

    The signal goes once the handler runs: a job claimed but not yet started when the
    signal lands is released instead (Q7 allows either), which is not what this tests.
    """
    queue = JobQueue(engine)
    started = tmp_path / "started"
    first = queue.enqueue("slow", {"sleep": 1.0, "started": str(started)}, serial_key="s")
    second = queue.enqueue("slow", {"sleep": 0}, serial_key="s")
    proc = start_cli_worker(db_url, "--grace", "20")
    try:
        wait_for(started.exists, timeout=20, what="the handler to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
    rows = job_rows(engine)
    assert rows[first]["state"] == "done"
    assert rows[second]["state"] == "queued"


@pytest.mark.slow
def test_sigterm_releases_a_job_that_outlives_the_grace(engine: sa.Engine, db_url: str) -> None:
    """A job still running when the grace period ends is released, not left leased (Q7)."""
    queue = JobQueue(engine)
    job_id = queue.enqueue("slow", {"sleep": 600})
    proc = start_cli_worker(db_url, "--grace", "0.2", "--lease", "600")
    try:
        wait_for(lambda: count(engine, jobs.c.state == "running") == 1, timeout=20, what="run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
    row = job_rows(engine)[job_id]
    assert row["lease_owner"] is None
    assert row["lease_expires_ms"] <= time.time() * 1000
    again = queue.claim(owner="next", kinds=["slow"], lease=60)
    assert again is not None
    assert (again.id, again.attempts, again.token) == (job_id, 1, 2)


def test_worker_command_once_and_without_handlers(engine: sa.Engine, db_url: str) -> None:
    """``calbridge worker --once`` runs what is due; without handlers it refuses to start."""
    queue = JobQueue(engine)
    queue.enqueue("slow")
    queue.enqueue("slow")
    queue.enqueue("slow", run_at=time.time() + 3600)

    result = CliRunner().invoke(
        cli, ["worker", "--database-url", db_url, "--handlers", HANDLERS, "--once"]
    )
    assert result.exit_code == 0, result.output
    assert "ran 2 job(s)" in result.output
    assert queue.stats() == {"default": {"done": 2, "queued": 1}}

    result = CliRunner().invoke(cli, ["worker", "--database-url", db_url])
    assert result.exit_code == 2
    assert "no job handlers" in result.output


def test_jobs_command_prints_stats_and_dead_jobs(engine: sa.Engine, db_url: str) -> None:
    """``calbridge jobs --json`` reports counts and dead jobs; --retry requeues one."""
    queue = JobQueue(engine)
    queue.enqueue("k")
    queue.enqueue("k")
    job = queue.claim(owner="w", kinds=["k"], lease=60)
    assert job is not None
    assert queue.fail(job, error="ValueError: nope", retry_at=None) == "dead"

    result = CliRunner().invoke(cli, ["jobs", "--database-url", db_url, "--json"])
    assert result.exit_code == 0, result.output
    assert '"dead": 1' in result.output
    assert "ValueError: nope" in result.output

    result = CliRunner().invoke(cli, ["jobs", "--database-url", db_url, "--retry", str(job.id)])
    assert result.exit_code == 0, result.output
    assert queue.stats() == {"default": {"queued": 2}}


def test_jobs_command_purges_dead_jobs(engine: sa.Engine, db_url: str) -> None:
    """``calbridge jobs --purge-dead`` deletes dead jobs (workers never prune them by
    default) and nothing else."""
    queue = JobQueue(engine)
    queue.enqueue("k")
    queue.enqueue("k")
    job = queue.claim(owner="w", kinds=["k"], lease=60)
    assert job is not None
    assert queue.fail(job, error="ValueError: nope", retry_at=None) == "dead"

    result = CliRunner().invoke(cli, ["jobs", "--database-url", db_url, "--purge-dead"])
    assert result.exit_code == 0, result.output
    assert "purged 1 dead job(s)" in result.output
    assert queue.stats() == {"default": {"queued": 1}}
