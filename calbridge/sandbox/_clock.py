"""The sandbox clock: manual (frozen) for deterministic tests, or following real time.

Every sandbox timer (Cronofy's 5-minute polling, asynchronous write application, webhook
retries, channel expiry) is scheduled on one :class:`Clock`. Timers run only when the
clock is driven: :meth:`Clock.advance` moves time forward and runs every timer that
falls due on the way (each one sees ``now()`` equal to its own due time in manual mode);
:meth:`Clock.run_due` runs what is due without moving time. ``calbridge sandbox serve``
drives a real-time clock with a background ticker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import inspect
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable

import attrs

__all__ = ["Clock", "Timer", "TimerCallback"]

log = logging.getLogger("calbridge.sandbox")

#: a timer callback: a plain function or a coroutine function, called with no arguments
TimerCallback = Callable[[], "Awaitable[None] | None"]

_EPOCH_DEFAULT = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


@attrs.define(eq=False)
class Timer:
    """A scheduled callback; :meth:`cancel` stops it from running."""

    when: dt.datetime
    callback: TimerCallback
    name: str = ""
    cancelled: bool = False

    def cancel(self) -> None:
        """Prevent the callback from running (no effect once it ran)."""
        self.cancelled = True


class Clock:
    """A controllable clock with timers.

    * ``Clock()`` or ``Clock(start=...)``: manual mode, time stands still until
      :meth:`advance` (deterministic tests).
    * ``Clock.realtime()``: follows the system clock (plus whatever :meth:`advance` added);
      someone must call :meth:`run_due` regularly (the server's ticker does).

    Thread-safe for scheduling; run the timers from one event loop at a time.
    """

    def __init__(self, start: dt.datetime | None = None, *, realtime: bool = False) -> None:
        start = start or (_now_utc() if realtime else _EPOCH_DEFAULT)
        if start.tzinfo is None:
            raise ValueError("Clock start must be timezone-aware")
        self._realtime = realtime
        self._virtual = start.astimezone(dt.UTC)
        self._offset = 0.0
        self._anchor_wall = time.time()
        self._anchor_virtual = self._virtual
        self._heap: list[tuple[dt.datetime, int, Timer]] = []
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._running = asyncio.Lock()

    @classmethod
    def realtime(cls) -> Clock:
        """A clock that follows real time from now on."""
        return cls(realtime=True)

    @property
    def is_realtime(self) -> bool:
        """True when time passes on its own."""
        return self._realtime

    def now(self) -> dt.datetime:
        """The sandbox's current time (aware, UTC)."""
        with self._lock:
            if not self._realtime:
                return self._virtual
            elapsed = time.time() - self._anchor_wall + self._offset
            return self._anchor_virtual + dt.timedelta(seconds=elapsed)

    def timestamp(self) -> float:
        """``now()`` as epoch seconds."""
        return self.now().timestamp()

    def call_at(self, when: dt.datetime, callback: TimerCallback, *, name: str = "") -> Timer:
        """Run ``callback`` once the clock reaches ``when``."""
        timer = Timer(when=when.astimezone(dt.UTC), callback=callback, name=name)
        with self._lock:
            heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def call_later(self, seconds: float, callback: TimerCallback, *, name: str = "") -> Timer:
        """Run ``callback`` ``seconds`` from now (0 means at the next :meth:`run_due`)."""
        return self.call_at(self.now() + dt.timedelta(seconds=seconds), callback, name=name)

    def pending(self) -> list[Timer]:
        """Timers not yet run nor cancelled, earliest first."""
        with self._lock:
            return [t for _, _, t in sorted(self._heap) if not t.cancelled]

    def next_due(self) -> dt.datetime | None:
        """When the earliest pending timer is due, if any."""
        pending = self.pending()
        return pending[0].when if pending else None

    def _pop_due(self, limit: dt.datetime) -> Timer | None:
        with self._lock:
            while self._heap and self._heap[0][0] <= limit:
                _, _, timer = heapq.heappop(self._heap)
                if not timer.cancelled:
                    return timer
            return None

    async def _run(self, timer: Timer) -> None:
        try:
            result = timer.callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("sandbox timer %r failed", timer.name)

    async def advance(self, seconds: float = 0.0) -> dt.datetime:
        """Move time forward by ``seconds`` and run every timer due on the way.

        Timers scheduled while advancing run too if they fall due before the target. In
        manual mode each timer sees ``now()`` equal to its own due time. Returns the new time.
        """
        if seconds < 0:
            raise ValueError("the sandbox clock never goes backwards")
        async with self._running:
            with self._lock:
                if self._realtime:
                    self._offset += seconds
                target = (
                    self.now() if self._realtime else self._virtual + dt.timedelta(seconds=seconds)
                )
            while (timer := self._pop_due(target)) is not None:
                if not self._realtime:
                    with self._lock:
                        self._virtual = max(self._virtual, timer.when)
                await self._run(timer)
            if not self._realtime:
                with self._lock:
                    self._virtual = max(self._virtual, target)
            return self.now()

    async def run_due(self) -> int:
        """Run every timer due now (including ones they schedule for now); returns the count."""
        count = 0
        async with self._running:
            while (timer := self._pop_due(self.now())) is not None:
                count += 1
                await self._run(timer)
        return count

    def set(self, when: dt.datetime) -> None:
        """Jump a manual clock to ``when`` without running timers (setup only)."""
        if self._realtime:
            raise RuntimeError("a real-time clock cannot be set; use advance()")
        with self._lock:
            self._virtual = when.astimezone(dt.UTC)


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
