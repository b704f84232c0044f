"""The worker: claims jobs with a lease, runs their async handlers, acks, retries, dead-letters.

One claimer per worker, woken by ``NOTIFY`` (PostgreSQL) or in-process enqueues, fills
the free slots; it also prunes old finished jobs on a schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Final, ParamSpec, TypeVar

import attrs

from .._tracing import SpanKind, span
from ..errors import RateLimited, Unavailable
from ..store import is_postgres, offload
from ..store.jobs import DEAD as DEAD_STATE
from ..store.jobs import NOTIFY_CHANNEL, listening
from ._model import DEFAULT_QUEUE, Handler, Job, LeaseLost, RetryLater, describe_error
from ._queue import DEFAULT_RETENTION, JobQueue
from ._registry import BUILTIN_HANDLERS, HandlerRegistry, load_handlers

__all__ = [
    "BUILTIN_HANDLERS",
    "PRUNE_KIND",
    "PRUNE_SCHEDULE",
    "HandlerRegistry",
    "Worker",
    "default_backoff",
    "load_handlers",
    "rate_limit_backoff",
    "rate_limit_streak",
]

log = logging.getLogger("calbridge.jobs")

P = ParamSpec("P")
R = TypeVar("R")

#: events passed to a worker's ``observer`` (tests use them as crash points)
EVENTS: Final = ("claimed", "finished", "acked", "failed", "lost", "released")


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def default_backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt``: 5 s doubling to 1 h, with 50% jitter."""
    base: float = min(3600.0, 5.0 * 2.0 ** min(attempt - 1, 20))
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


@attrs.define
class _Running:
    job: Job
    task: asyncio.Task[object]
    lost: bool = False
    released: bool = False


#: the built-in job kind that deletes old finished jobs (see ``Worker(retention=...)``)
PRUNE_KIND: Final = "calbridge.jobs.prune"
#: the recurring job (``job_schedules`` row) that enqueues it
PRUNE_SCHEDULE: Final = "calbridge.jobs.prune"
#: longest wait between attempts to reopen a lost LISTEN connection, seconds
_LISTEN_RETRY_CAP: Final = 30.0


class Worker:
    """Runs jobs from ``queue`` with ``concurrency`` slots until :meth:`stop`.

    One claimer per worker fills the free slots, several jobs per claim; a slot whose job
    ends acks it and claims its next job in one transaction. An idle worker looks for
    work once per ``poll_interval`` (one read-only statement), and sooner when woken: on
    PostgreSQL by ``NOTIFY`` on :data:`~calbridge.jobs.NOTIFY_CHANNEL` (a dedicated
    ``LISTEN`` connection; while it is down, polling alone goes on), and in-process by
    the queue's own enqueues (:meth:`JobQueue.add_waker`).

    Args:
        queue: the queue (engine + clock).
        handlers: kinds this worker runs; it claims only those kinds.
        concurrency: jobs run at once by this process.
        queues: queue names to take jobs from.
        lease: seconds a claim lasts without a heartbeat; another worker takes the job
            over after that.
        heartbeat: seconds between lease renewals (default ``lease / 3``).
        poll_interval: seconds an idle worker waits before looking again.
        grace: seconds in-flight jobs get to finish after :meth:`stop`; then they are
            cancelled and released (another worker runs them again).
        schedule_interval: seconds between checks for due recurring jobs (None: never).
        backoff: attempt number -> seconds before the retry.
        observer: called with an event name (``claimed``, ``finished``, ``acked``,
            ``failed``, ``lost``, ``released``) and the job; for metrics and tests.
        owner: the name recorded on claimed rows (default host:pid:random).
        retention: finished (``done``, ``merged``) jobs older than this are deleted by
            the built-in recurring job :data:`PRUNE_KIND` (None: never).
        dead_retention: the same for ``dead`` jobs (None, the default: kept until an
            operator purges them, ``calbridge jobs --purge-dead``).
        prune_interval: seconds between prunes (None: this worker neither schedules nor
            runs them). Needs ``schedule_interval``.
        listen: on PostgreSQL, wake on ``NOTIFY`` (False: poll only).
    """

    def __init__(
        self,
        queue: JobQueue,
        handlers: HandlerRegistry | Mapping[str, Handler],
        *,
        concurrency: int = 4,
        queues: Iterable[str] = (DEFAULT_QUEUE,),
        lease: float = 60.0,
        heartbeat: float | None = None,
        poll_interval: float = 1.0,
        grace: float = 25.0,
        schedule_interval: float | None = 30.0,
        backoff: Callable[[int], float] = default_backoff,
        observer: Callable[[str, Job], None] | None = None,
        owner: str | None = None,
        retention: float | timedelta | None = DEFAULT_RETENTION,
        dead_retention: float | timedelta | None = None,
        prune_interval: float | None = 3600.0,
        listen: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.queue = queue
        self.handlers = HandlerRegistry()
        self.handlers.update(
            handlers if isinstance(handlers, HandlerRegistry) else HandlerRegistry(handlers)
        )
        self.concurrency = concurrency
        self.queues = tuple(queues)
        self.lease = lease
        self.heartbeat = heartbeat if heartbeat is not None else lease / 3
        if not 0 < self.heartbeat < lease:
            raise ValueError("heartbeat must be positive and shorter than the lease")
        self.poll_interval = poll_interval
        self.grace = grace
        self.schedule_interval = schedule_interval
        self.backoff = backoff
        self.observer = observer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.retention = None if retention is None else _seconds(retention)
        self.dead_retention = None if dead_retention is None else _seconds(dead_retention)
        self.prune_interval = prune_interval if schedule_interval else None
        if self.prune_interval is not None and PRUNE_KIND not in self.handlers:
            self.handlers.add(PRUNE_KIND, self._prune)
        self.listen = listen and is_postgres(queue.engine)
        self._running: dict[int, _Running] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._force: asyncio.Event | None = None
        self._wakeup: asyncio.Event | None = None
        self._listening = False

    def __repr__(self) -> str:
        return f"<Worker {self.owner} queues={list(self.queues)} running={len(self._running)}>"

    @property
    def listening(self) -> bool:
        """True while the PostgreSQL ``LISTEN`` connection is up."""
        return self._listening

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until :meth:`stop`; then let in-flight jobs finish (or release them)."""
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._wakeup = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup

        def waker(queue: str) -> None:  # any thread: a job was committed by this process
            if not queue or queue in self.queues:
                loop.call_soon_threadsafe(wakeup.set)

        self.queue.add_waker(waker)
        log.info(
            "worker %s: kinds %s, queues %s, concurrency %d",
            self.owner,
            ", ".join(self.handlers.kinds()),
            ", ".join(self.queues),
            self.concurrency,
        )
        helpers: list[asyncio.Task[None]] = []
        claimer = asyncio.create_task(self._claimer())
        try:
            if self.listen:
                helpers.append(asyncio.create_task(self._listen()))
            if self.schedule_interval:
                helpers.append(asyncio.create_task(self._schedules()))
            await self._stopping.wait()
            await claimer
            runners = set(self._runners)
            pending: set[asyncio.Task[None]] = set()
            if runners:
                _, pending = await asyncio.wait(runners, timeout=self.grace)
            if pending:
                self._force.set()
                for run in list(self._running.values()):
                    run.released = True
                    run.task.cancel()
            await asyncio.gather(*runners, return_exceptions=True)
        finally:
            self.queue.remove_waker(waker)
            tasks = [claimer, *helpers, *self._runners]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("worker %s stopped", self.owner)

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; in-flight jobs get ``grace`` seconds (``now=True``: none)."""
        self._stop_requested = True
        if self._stopping is None:
            return
        if self._stopping.is_set() or now:
            if self._force is not None:
                self._force.set()
            for run in list(self._running.values()):
                run.released = True
                run.task.cancel()
        self._stopping.set()
        if self._wakeup is not None:
            self._wakeup.set()

    def handle_signals(self) -> None:
        """SIGTERM/SIGINT stop the worker gracefully; a second one stops it at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run_until_idle(self) -> int:
        """Enqueue due schedules, then run jobs one at a time until none is runnable.

        Returns how many jobs ran. For tests and one-shot use (``--once``).
        """
        self._stopping = self._stopping or asyncio.Event()
        if self.schedule_interval:
            await self._db(self.queue.enqueue_due_schedules)
        count = 0
        job = await self._claim()
        while job is not None:
            following = await self._execute(job)
            count += 1
            job = following if following is not None else await self._claim()
        return count

    # ------------------------------------------------------------ internals

    async def _db(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        # every database call of the worker crosses the store's one async boundary
        return await offload(fn, *args, **kwargs)

    def _observe(self, event: str, job: Job) -> None:
        if self.observer is not None:
            self.observer(event, job)

    async def _claim_many(self, limit: int) -> list[Job]:
        return await self._guarded(
            self._db(
                self.queue.claim_many,
                owner=self.owner,
                kinds=self.handlers.kinds(),
                queues=self.queues,
                lease=self.lease,
                limit=limit,
            ),
            lambda got: got,
        )

    async def _claim(self) -> Job | None:
        """Claim one job (``run_until_idle``; the sync suite's state machines call it)."""
        got = await self._claim_many(1)
        return got[0] if got else None

    async def _guarded(self, call: Awaitable[R], claimed: Callable[[R], Sequence[Job]]) -> R:
        """Await a database call that may claim jobs, even when cancelled meanwhile.

        A cancelled await does not stop the call's thread: its claim would commit with
        nobody to run the jobs until their leases ran out. Wait for it and give them back.
        """
        fut = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                for job in claimed(await fut):
                    if await self._db(self.queue.release, job):
                        self._observe("released", job)
            raise

    async def _release(self, job: Job) -> None:
        try:
            if await self._db(self.queue.release, job):
                self._observe("released", job)
        except Exception:
            log.exception("worker %s: releasing job %s failed", self.owner, job.id)

    async def _claimer(self) -> None:
        """Fill free slots: claim as many jobs as slots are free, then wait for a slot to
        free up, a wake-up (NOTIFY, an in-process enqueue) or the poll interval."""
        assert self._stopping is not None
        assert self._wakeup is not None
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.concurrency - len(self._runners)
            timeout: float | None = None  # all slots busy: a finishing runner wakes us
            if free > 0:
                try:
                    got = await self._claim_many(free)
                except Exception:
                    log.exception("worker %s: claiming jobs failed; retrying", self.owner)
                    got = []
                if self._stopping.is_set():
                    for job in got:
                        await self._release(job)
                    return
                for job in got:
                    self._start(job)
                if len(got) == free:
                    continue
                timeout = self.poll_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._runner(job))
        self._runners.add(task)
        task.add_done_callback(self._runner_done)

    def _runner_done(self, task: asyncio.Task[None]) -> None:
        self._runners.discard(task)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _runner(self, job: Job) -> None:
        """Run ``job``, then each job its ack claimed, until none follows."""
        assert self._stopping is not None
        current: Job | None = job
        while current is not None:
            if self._stopping.is_set():
                await self._release(current)
                return
            job = current
            try:
                current = await self._execute(job)
            except Exception:
                # the database failed while settling: the lease runs out, the job reruns
                log.exception("worker %s: settling job %s failed", self.owner, job.id)
                return

    async def _listen(self) -> None:
        """Wake the claimer on ``NOTIFY`` (PostgreSQL), over a connection of its own."""
        assert self._wakeup is not None
        delay = self.poll_interval
        while True:
            try:
                async with listening(self.queue.engine, NOTIFY_CHANNEL) as notes:
                    self._listening = True
                    self._wakeup.set()  # what was enqueued while nobody listened
                    delay = self.poll_interval
                    async for payload in notes:
                        if not payload or payload in self.queues:
                            self._wakeup.set()
            except Exception as exc:
                log.warning(
                    "worker %s: LISTEN connection unavailable (%s); polling every %g s",
                    self.owner,
                    type(exc).__name__,
                    self.poll_interval,
                )
            finally:
                self._listening = False
            await asyncio.sleep(delay)
            delay = min(_LISTEN_RETRY_CAP, max(delay, 0.1) * 2)

    async def _schedules(self) -> None:
        assert self.schedule_interval
        if self.prune_interval is not None:
            try:
                await self._db(
                    self.queue.ensure_schedule,
                    PRUNE_SCHEDULE,
                    PRUNE_KIND,
                    {"retention": self.retention, "dead_retention": self.dead_retention},
                    every=self.prune_interval,
                    priority=100,
                )
            except Exception:
                log.exception("worker %s: scheduling the pruning of old jobs failed", self.owner)
        while True:
            try:
                ids = await self._db(self.queue.enqueue_due_schedules)
                if ids:
                    log.info("enqueued recurring jobs %s", ids)
            except Exception:
                log.exception("worker %s: enqueueing recurring jobs failed", self.owner)
            await asyncio.sleep(self.schedule_interval)

    async def _prune(self, job: Job) -> None:
        """The built-in :data:`PRUNE_KIND` handler: delete old finished jobs in batches."""
        deleted = 0
        retention, dead = job.payload.get("retention"), job.payload.get("dead_retention")
        if retention is not None:
            deleted += await self._db(self.queue.prune, older_than=float(retention))
        if dead is not None:
            deleted += await self._db(
                self.queue.prune, older_than=float(dead), states=(DEAD_STATE,)
            )
        if deleted:
            log.info("pruned %d finished job(s)", deleted)

    async def _heartbeats(self, run: _Running) -> None:
        # a process-local deadline: how long the lease surely lasts if the database is
        # unreachable (monotonic, so a wall-clock step changes nothing)
        deadline = time.monotonic() + self.lease
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                ok = await self._db(self.queue.heartbeat, run.job, lease=self.lease)
            except Exception:
                log.warning("job %s: heartbeat failed", run.job.id, exc_info=True)
                ok = time.monotonic() < deadline
            else:
                if ok:
                    deadline = time.monotonic() + self.lease
            if not ok:
                log.warning("job %s: lease lost; cancelling its handler", run.job.id)
                run.lost = True
                run.task.cancel()
                return

    async def _execute(self, job: Job) -> Job | None:
        """Run ``job`` to its end; returns the next job when the ack claimed one."""
        self._observe("claimed", job)
        handler = self.handlers[job.kind]

        async def call() -> object:
            attributes: dict[str, str | int] = {
                "calbridge.job.kind": job.kind,
                "calbridge.job.attempt": job.attempts,
            }
            with span(f"calbridge.job {job.kind}", kind=SpanKind.CONSUMER, **attributes):
                return await handler(job)

        task: asyncio.Task[object] = asyncio.create_task(call())
        run = _Running(job, task)
        self._running[job.id] = run
        beats = asyncio.create_task(self._heartbeats(run))
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            # the worker itself is being cancelled: stop the handler, give the job back
            task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._db(self.queue.release, job))
            raise
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
            del self._running[job.id]
        return await self._settle(run)

    async def _settle(self, run: _Running) -> Job | None:
        job, task = run.job, run.task
        if task.cancelled():
            if run.lost:
                self._observe("lost", job)
            elif await self._db(self.queue.release, job):
                log.info("job %s released (worker stopping)", job.id)
                self._observe("released", job)
            return None
        exc = task.exception()
        if exc is None:
            self._observe("finished", job)
            following: Job | None = None
            if self._stopping is not None and self._stopping.is_set():
                acked = await self._db(self.queue.complete, job)
            else:
                # one transaction acks this job and claims the next (half the commits)
                acked, following = await self._guarded(
                    self._db(
                        self.queue.complete_and_claim,
                        job,
                        owner=self.owner,
                        kinds=self.handlers.kinds(),
                        queues=self.queues,
                        lease=self.lease,
                    ),
                    lambda result: [] if result[1] is None else [result[1]],
                )
            if acked:
                self._observe("acked", job)
            else:
                log.warning("job %s: ack refused, the lease was lost; result discarded", job.id)
                self._observe("lost", job)
            return following
        if isinstance(exc, LeaseLost):
            log.warning("job %s: %s", job.id, exc)
            self._observe("lost", job)
            return None
        delay = _retry_later(exc)
        error = describe_error(exc)
        if isinstance(exc, RateLimited):
            # back-pressure, not a failure: never uses an attempt (see docs/jobs.md)
            streak = rate_limit_streak(job.last_error) + 1
            if delay is None:
                delay = rate_limit_backoff(streak)
            error = f"{_STREAK_MARK}{streak} in a row, provider {exc.provider})\n{error}"
        # the retry time is taken from the queue's clock in the failing transaction (the
        # database's on PostgreSQL), not from this host's
        if delay is not None:
            state = await self._db(self.queue.fail, job, error=error, retry_in=delay, counts=False)
        else:
            state = await self._db(
                self.queue.fail, job, error=error, retry_in=self.backoff(job.attempts)
            )
        if state is None:
            self._observe("lost", job)
            return None
        log.log(
            logging.ERROR if state == "dead" else logging.WARNING,
            "job %s (%s) failed on attempt %d/%d: %s; now %s",
            job.id,
            job.kind,
            job.attempts,
            job.max_attempts,
            type(exc).__name__,
            state,
        )
        self._observe("failed", job)
        return None


#: first line of ``last_error`` after a 429: ``rate limited (<n> in a row, provider <p>)``
_STREAK_MARK: Final = "rate limited ("
_STREAK_RE: Final = re.compile(r"rate limited \((\d+) in a row")
#: adaptive backoff after a 429 without Retry-After: first delay and cap, seconds
RATE_LIMIT_BASE: Final = 5.0
RATE_LIMIT_CAP: Final = 900.0


def rate_limit_streak(last_error: str | None) -> int:
    """How many 429s in a row the job's previous runs got (0: its last run was no 429).

    Read from the first line of ``last_error``, which the worker writes after each 429;
    any other outcome overwrites it, so the streak restarts after a run that was not
    throttled.
    """
    match = _STREAK_RE.match(last_error or "")
    return int(match.group(1)) if match else 0


def rate_limit_backoff(streak: int) -> float:
    """Seconds before rerunning a job after its ``streak``-th 429 in a row (no Retry-After).

    5 s doubling per consecutive 429, capped at 15 min, with jitter: uniform in
    ``[base/2, base]`` so throttled jobs of many workers do not return together.
    """
    base = min(RATE_LIMIT_CAP, RATE_LIMIT_BASE * 2.0 ** min(max(streak, 1) - 1, 20))
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


def _retry_later(exc: BaseException) -> float | None:
    if isinstance(exc, RetryLater):
        return exc.delay
    if isinstance(exc, (RateLimited, Unavailable)) and exc.retry_after is not None:
        return max(0.0, float(exc.retry_after))
    return None
