"""The throttle every provider sandbox puts in front of its authenticated API calls.

Providers limit an application two ways, and a sandbox answers 429 for both as its
provider does:

* rates over sliding windows (Cronofy: 50 requests a second and 500 a minute per
  application; Google: per user and per project a minute), given as
  :data:`RateLimit` ``(requests, seconds)`` pairs;
* requests in progress at once (Microsoft Graph: 4 per mailbox).

:meth:`Throttle.admit` takes one request of a key (an application, a user, a mailbox):
it counts it in the sandbox's :class:`~calbridge.sandbox.RequestCounts` (``limited``),
and refuses it with a :class:`Throttled` (counted as ``throttled``) when a limit is
reached. Windows run on real time (``time.monotonic``), as the providers' do, whatever
the sandbox clock says. ``World(rate_limits=False)`` turns every limit off.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import attrs

from ._control import RequestCounts

__all__ = ["RateLimit", "Throttle", "Throttled", "retry_after_headers"]

#: at most ``requests`` in any window of ``seconds`` (a sliding window)
RateLimit = tuple[int, float]


@attrs.frozen
class Throttled:
    """A refused request: what the 429 may tell the client."""

    #: seconds until a request of the key would be admitted again (None: unknown, e.g.
    #: a concurrency limit, freed whenever a request in progress ends)
    retry_after: float | None
    #: the rate limit reached (None: the concurrency limit)
    limit: RateLimit | None


def retry_after_headers(seconds: float | None) -> dict[str, str]:
    """``{"Retry-After": "0.35"}`` (fractional seconds, as Graph sends them), or ``{}``."""
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


class Throttle:
    """Rate and concurrency limits per key, in real time (thread-safe).

    Args:
        counts: where admitted (``limited``) and refused (``throttled``) requests are
            counted, if anywhere.
        enabled: whether limits apply now (``lambda: world.rate_limits``); requests are
            counted either way.
        clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(
        self,
        counts: RequestCounts | None = None,
        *,
        enabled: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counts = counts
        self._enabled = enabled
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, collections.deque[float]] = {}
        self._inflight: dict[str, int] = {}

    @contextlib.contextmanager
    def admit(
        self,
        key: str,
        *,
        rates: Iterable[RateLimit] = (),
        concurrency: int | None = None,
    ) -> Iterator[Throttled | None]:
        """Take one request of ``key`` for the ``with`` block.

        Yields None when admitted (the request then holds one of ``concurrency`` slots
        until the block ends) or the :class:`Throttled` refusal (holding nothing)::

            with throttle.admit(client_id, rates=((50, 1.0), (500, 60.0))) as refused:
                if refused is not None:
                    return Response(status_code=429)
                return await handler(request)
        """
        if self._counts is not None:
            self._counts.limited += 1
        enabled = self._enabled()
        limits = tuple(rates) if enabled else ()
        cap = concurrency if enabled else None
        with self._lock:
            refused = self._over_rate(key, limits) if limits else None
            if refused is None and cap is not None:
                if self._inflight.get(key, 0) >= cap:
                    refused = Throttled(retry_after=None, limit=None)
                else:
                    self._inflight[key] = self._inflight.get(key, 0) + 1
        if refused is not None:
            if self._counts is not None:
                self._counts.throttled += 1
            yield refused
            return
        try:
            yield None
        finally:
            if cap is not None:
                with self._lock:
                    self._inflight[key] -= 1

    def _over_rate(self, key: str, limits: tuple[RateLimit, ...]) -> Throttled | None:
        """The first window ``key`` has filled, else None (and the request is recorded)."""
        now = self._clock()
        hits = self._hits.setdefault(key, collections.deque())
        longest = max(window for _, window in limits)
        while hits and hits[0] <= now - longest:
            hits.popleft()
        for limit, window in limits:
            inside = [t for t in hits if t > now - window]
            if len(inside) >= limit:
                # admitted again once enough of the window's requests have left it
                leaving = inside[len(inside) - limit] if limit > 0 else now
                wait = max(0.0, leaving + window - now)
                return Throttled(retry_after=wait, limit=(limit, window))
        hits.append(now)
        return None

    def in_progress(self, key: str) -> int:
        """Requests of ``key`` holding a concurrency slot now."""
        with self._lock:
            return self._inflight.get(key, 0)
