"""The worker: claims jobs with a lease, runs their async handlers, acks, retries, dead-letters."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
import random
import re
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Final, ParamSpec, TypeVar

import attrs

from ..errors import ConfigurationError, RateLimited, Unavailable
from ._model import DEFAULT_QUEUE, Handler, Job, LeaseLost, RetryLater, describe_error
from ._queue import JobQueue

__all__ = [
    "BUILTIN_HANDLERS",
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


def default_backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt``: 5 s doubling to 1 h, with 50% jitter."""
    base: float = min(3600.0, 5.0 * 2.0 ** min(attempt - 1, 20))
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


class HandlerRegistry:
    """Job kinds and their async handlers.

    Example::

        handlers = HandlerRegistry()

        @handlers.handler("sync")
        async def sync(job: Job) -> None: ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for kind, fn in (handlers or {}).items():
            self.add(kind, fn)

    def __repr__(self) -> str:
        return f"<HandlerRegistry kinds={sorted(self._handlers)}>"

    def add(self, kind: str, fn: Handler) -> None:
        """Register ``fn`` for ``kind``; a kind has one handler."""
        if not kind or len(kind) > 128:
            raise ValueError("a job kind is a non-empty name of at most 128 characters")
        if kind in self._handlers and self._handlers[kind] is not fn:
            raise ValueError(f"job kind {kind!r} already has a handler")
        self._handlers[kind] = fn

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(fn: Handler) -> Handler:
            self.add(kind, fn)
            return fn

        return deco

    def update(self, other: HandlerRegistry) -> None:
        """Add every handler of ``other``."""
        for kind, fn in other.items():
            self.add(kind, fn)

    def items(self) -> Iterator[tuple[str, Handler]]:
        return iter(sorted(self._handlers.items()))

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def __getitem__(self, kind: str) -> Handler:
        return self._handlers[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers


@attrs.define
class _Running:
    job: Job
    task: asyncio.Task[object]
    lost: bool = False
    released: bool = False


class Worker:
    """Runs jobs from ``queue`` with ``concurrency`` slots until :meth:`stop`.

    Args:
        queue: the queue (engine + clock).
        handlers: kinds this worker runs; it claims only those kinds.
        concurrency: jobs run at once by this process.
        queues: queue names to take jobs from.
        lease: seconds a claim lasts without a heartbeat; another worker takes the job
            over after that.
        heartbeat: seconds between lease renewals (default ``lease / 3``).
        poll_interval: seconds an idle slot waits before looking again.
        grace: seconds in-flight jobs get to finish after :meth:`stop`; then they are
            cancelled and released (another worker runs them again).
        schedule_interval: seconds between checks for due recurring jobs (None: never).
        backoff: attempt number -> seconds before the retry.
        observer: called with an event name (``claimed``, ``finished``, ``acked``,
            ``failed``, ``lost``, ``released``) and the job; for metrics and tests.
        owner: the name recorded on claimed rows (default host:pid:random).
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
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease <= 0:
            raise ValueError("lease must be positive")
        self.queue = queue
        self.handlers = (
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
        self._running: dict[int, _Running] = {}
        # the worker's own threads for its database calls: handlers that fill the default
        # executor cannot starve heartbeats (which would lose leases of healthy jobs)
        self._executor: ThreadPoolExecutor | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._force: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.owner} queues={list(self.queues)} running={len(self._running)}>"

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until :meth:`stop`; then let in-flight jobs finish (or release them)."""
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        log.info(
            "worker %s: kinds %s, queues %s, concurrency %d",
            self.owner,
            ", ".join(self.handlers.kinds()),
            ", ".join(self.queues),
            self.concurrency,
        )
        slots = [asyncio.create_task(self._slot()) for _ in range(self.concurrency)]
        ticker = asyncio.create_task(self._schedules()) if self.schedule_interval else None
        try:
            await self._stopping.wait()
            _, pending = await asyncio.wait(slots, timeout=self.grace)
            if pending:
                self._force.set()
                for run in list(self._running.values()):
                    run.released = True
                    run.task.cancel()
            await asyncio.gather(*slots)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            self._close_executor()
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
        try:
            job = await self._claim()
            while job is not None:
                following = await self._execute(job)
                count += 1
                job = following if following is not None else await self._claim()
        finally:
            self._close_executor()
        return count

    # ------------------------------------------------------------ internals

    async def _db(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency + 2, thread_name_prefix="calbridge-jobs"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _close_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _observe(self, event: str, job: Job) -> None:
        if self.observer is not None:
            self.observer(event, job)

    async def _claim(self) -> Job | None:
        return await self._guarded(
            self._db(
                self.queue.claim,
                owner=self.owner,
                kinds=self.handlers.kinds(),
                queues=self.queues,
                lease=self.lease,
            ),
            lambda job: job,
        )

    async def _guarded(self, call: Awaitable[R], claimed: Callable[[R], Job | None]) -> R:
        """Await a database call that may claim a job, even when cancelled meanwhile.

        A cancelled await does not stop the call's thread: its claim would commit with
        nobody to run the job until the lease ran out. Wait for it and give the job back.
        """
        fut = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                job = claimed(await fut)
                if job is not None and await self._db(self.queue.release, job):
                    self._observe("released", job)
            raise

    async def _slot(self) -> None:
        assert self._stopping is not None
        job: Job | None = None
        while True:
            if self._stopping.is_set():
                if job is not None and await self._db(self.queue.release, job):
                    self._observe("released", job)
                return
            if job is None:
                try:
                    job = await self._claim()
                except Exception:
                    log.exception("worker %s: claiming a job failed; retrying", self.owner)
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.poll_interval)
                continue
            current, job = job, None
            try:
                job = await self._execute(current)
            except Exception:
                # the database failed while settling: the lease runs out, the job reruns
                log.exception("worker %s: settling job %s failed", self.owner, current.id)

    async def _schedules(self) -> None:
        assert self.schedule_interval
        while True:
            try:
                ids = await self._db(self.queue.enqueue_due_schedules)
                if ids:
                    log.info("enqueued recurring jobs %s", ids)
            except Exception:
                log.exception("worker %s: enqueueing recurring jobs failed", self.owner)
            await asyncio.sleep(self.schedule_interval)

    async def _heartbeats(self, run: _Running) -> None:
        clock = self.queue.clock
        deadline = clock() + self.lease
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                ok = await self._db(self.queue.heartbeat, run.job, lease=self.lease)
            except Exception:
                log.warning("job %s: heartbeat failed", run.job.id, exc_info=True)
                ok = clock() < deadline
            else:
                if ok:
                    deadline = clock() + self.lease
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
                    lambda result: result[1],
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
        now = self.queue.clock()
        error = describe_error(exc)
        if isinstance(exc, RateLimited):
            # back-pressure, not a failure: never uses an attempt (see docs/jobs.md)
            streak = rate_limit_streak(job.last_error) + 1
            if delay is None:
                delay = rate_limit_backoff(streak)
            error = f"{_STREAK_MARK}{streak} in a row, provider {exc.provider})\n{error}"
        if delay is not None:
            state = await self._db(
                self.queue.fail, job, error=error, retry_at=now + delay, counts=False
            )
        else:
            state = await self._db(
                self.queue.fail, job, error=error, retry_at=now + self.backoff(job.attempts)
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


#: ``module:attribute`` of the HandlerRegistry objects every ``calbridge worker`` loads.
#: calbridge packages that define job kinds (sync, channel renewal) add theirs here.
BUILTIN_HANDLERS: list[str] = []


def load_handlers(
    paths: Iterable[str], *, queue: JobQueue | None = None, builtins: bool = True
) -> HandlerRegistry:
    """One registry merged from ``module:attribute`` paths.

    Each attribute is a :class:`HandlerRegistry`, or a callable that takes the
    :class:`JobQueue` (``queue``) and returns one (handlers that need the store).

    Raises:
        ConfigurationError: a path is malformed, cannot be imported or gives no registry.
    """
    registry = HandlerRegistry()
    for path in [*(BUILTIN_HANDLERS if builtins else ()), *paths]:
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ConfigurationError(f"handlers must be given as module:attribute, not {path!r}")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load job handlers {path!r}: {exc}") from None
        if not isinstance(obj, HandlerRegistry) and callable(obj) and queue is not None:
            obj = obj(queue)
        if not isinstance(obj, HandlerRegistry):
            raise ConfigurationError(
                f"{path!r} is neither a calbridge.jobs.HandlerRegistry nor a callable "
                "that takes the JobQueue and returns one"
            )
        registry.update(obj)
    return registry
