"""Webhook delivery: real HTTP POSTs with a timeout, retried with backoff on the sandbox clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping

import attrs
import httpx

from ._clock import Clock
from ._faults import Faults

__all__ = ["DeliveryAttempt", "DeliveryPolicy", "WebhookDelivery"]

log = logging.getLogger("calbridge.sandbox")


@attrs.frozen(kw_only=True)
class DeliveryPolicy:
    """When to retry a failed delivery: ``first_retry * factor**n`` capped at ``max_delay``,
    until ``give_up_after`` seconds after the first attempt (the last try is made then)."""

    first_retry: float = 30.0
    factor: float = 2.0
    max_delay: float = 3600.0
    give_up_after: float = 24 * 3600.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.first_retry * self.factor ** (attempt - 1)))


@attrs.frozen(kw_only=True)
class DeliveryAttempt:
    """One POST (or a dropped notification) as the deliverer saw it."""

    delivery_id: str
    provider: str
    url: str
    attempt: int
    at: dt.datetime
    ok: bool
    status: int | None = None
    #: ``"timeout"``, ``"connect_error: ..."``, ``"dropped"`` (fault) or None
    error: str | None = None
    body: bytes = attrs.field(default=b"", repr=False)
    #: True when no further retry will be made
    final: bool = False


@attrs.frozen(kw_only=True)
class _Job:
    provider: str
    url: str
    body: bytes
    headers: dict[str, str]
    policy: DeliveryPolicy
    on_result: ResultCallback | None
    keep_trying: Callable[[], bool] | None
    delivery_id: str
    first: dt.datetime


#: told of every attempt (the provider sandbox uses it to close failing channels)
ResultCallback = Callable[[DeliveryAttempt], None]


class WebhookDelivery:
    """Delivers notifications for every provider sandbox of one world.

    :meth:`deliver` schedules the first attempt on the clock "now", so it happens at the
    next :meth:`Clock.run_due` / :meth:`Clock.advance` (the server's ticker does that in
    real time). With a manual clock the POST completes inside that call (deterministic);
    with a real-time clock it runs as a background task. A failure is a non-2xx answer, a
    connection error, or no complete answer within ``timeout`` seconds of real time (over
    the network and in-process alike); it is retried per
    :class:`DeliveryPolicy`. :attr:`attempts` keeps every attempt for tests.
    """

    def __init__(
        self,
        clock: Clock,
        faults: Faults,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        history: int = 10_000,
    ) -> None:
        self.clock = clock
        self.faults = faults
        self.timeout = timeout
        self.transport = transport
        #: the latest attempts, oldest first (at most ``history``)
        self.attempts: deque[DeliveryAttempt] = deque(maxlen=history)
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    def deliver(
        self,
        provider: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        policy: DeliveryPolicy | None = None,
        on_result: ResultCallback | None = None,
        keep_trying: Callable[[], bool] | None = None,
    ) -> str:
        """Queue a POST of ``body`` to ``url``; returns the delivery id.

        ``keep_trying`` is asked before each retry (e.g. "is the channel still open?").
        Faults armed for ``provider`` may drop the notification or send it twice.
        """
        policy = policy or DeliveryPolicy()
        with self._lock:
            delivery_id = f"dlv_{next(self._ids)}"
        fate = self.faults.notification_fate(provider)
        if fate == "drop":
            self._record(
                DeliveryAttempt(
                    delivery_id=delivery_id,
                    provider=provider,
                    url=url,
                    attempt=0,
                    at=self.clock.now(),
                    ok=False,
                    error="dropped",
                    body=body,
                    final=True,
                )
            )
            return delivery_id
        job = _Job(
            provider=provider,
            url=url,
            body=body,
            headers=dict(headers),
            policy=policy,
            on_result=on_result,
            keep_trying=keep_trying,
            delivery_id=delivery_id,
            first=self.clock.now(),
        )
        for _ in range(2 if fate == "duplicate" else 1):
            self._schedule(job, 1, 0.0)
        return delivery_id

    def _schedule(self, job: _Job, attempt: int, delay: float) -> None:
        async def run() -> None:
            if attempt > 1 and job.keep_trying is not None and not job.keep_trying():
                return
            if self.clock.is_realtime:
                # real time: a slow receiver must not hold up the other timers
                task = asyncio.get_running_loop().create_task(post())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            await post()

        async def post() -> None:
            status: int | None = None
            error: str | None = None
            try:
                # httpx's timeout bounds each network phase but not the whole exchange, and
                # an in-process transport (httpx.ASGITransport) ignores it: the deadline
                # for the answer is enforced here, the same for every transport
                async with asyncio.timeout(self.timeout):
                    async with httpx.AsyncClient(
                        timeout=self.timeout, transport=self.transport
                    ) as client:
                        response = await client.post(job.url, content=job.body, headers=job.headers)
                status = response.status_code
            except (httpx.TimeoutException, TimeoutError):
                error = "timeout"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}"
            ok = status is not None and 200 <= status < 300
            now = self.clock.now()
            elapsed = (now - job.first).total_seconds()
            remaining = job.policy.give_up_after - elapsed
            retry = not ok and remaining > 0
            next_delay = min(job.policy.delay(attempt), remaining)
            result = DeliveryAttempt(
                delivery_id=job.delivery_id,
                provider=job.provider,
                url=job.url,
                attempt=attempt,
                at=now,
                ok=ok,
                status=status,
                error=error,
                body=job.body,
                final=not retry,
            )
            self._record(result)
            if job.on_result is not None:
                job.on_result(result)
            if retry:
                self._schedule(job, attempt + 1, next_delay)

        self.clock.call_later(delay, run, name=f"deliver {job.delivery_id} #{attempt}")

    def _record(self, attempt: DeliveryAttempt) -> None:
        with self._lock:
            self.attempts.append(attempt)
        log.debug(
            "sandbox delivery %s #%d to %s: %s",
            attempt.delivery_id,
            attempt.attempt,
            attempt.url,
            attempt.status or attempt.error,
        )
