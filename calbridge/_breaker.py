"""Circuit breakers: a provider that keeps failing is left alone for a while.

During a provider's outage every sync job, token refresh and app call would go on sending
requests, each retried with backoff by :func:`calbridge.send`: load on a service that is
already down, workers busy waiting, and jobs failing one by one. A breaker per provider
(per shared HTTP client) counts the calls that failed in a row: a 5xx answer after the
retries, a timeout or a lost connection. After ``threshold`` of them the circuit
*opens*: calls fail at once with :class:`~calbridge.errors.Unavailable` carrying
``retry_after`` (the time left), with no network I/O, and a job worker reschedules the job
for then. After ``cooldown`` seconds one call goes through as a probe (*half-open*); its
success closes the circuit, its failure opens it for another ``cooldown``.

What does not count: 4xx answers (the provider is up; the request or the credentials are
wrong, and ``invalid_grant`` / ``invalid_client`` have their own handling), 429s (rate
limits have theirs), and calls cancelled or broken before an answer for reasons of the
caller's own.

Why not a library: purgatory (the maintained async one) runs every call through an async
unit of work and message bus, which costs more per call than the rest of calbridge's
request path on a read, has no injectable clock for the tests' fake time, and cannot tell
how long until the probe, which is what ``retry_after`` needs. The state machine here is
a few comparisons, and nothing at all while the circuit is closed.

State is per process: each worker learns of an outage from its own calls (a provider-wide
*pause* stored in the database is for refused app credentials; see ``Store.pause_provider``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

import attrs
import httpx

from .errors import Unavailable

__all__ = ["BreakerPolicy", "CircuitBreaker", "circuit_breaker"]

log = logging.getLogger("calbridge.http")

State = Literal["closed", "open", "half_open"]
#: how long a caller is asked to wait while the probe of a half-open circuit is out
_PROBE_WAIT: Final = 1.0


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """When a provider's circuit opens and for how long.

    Attributes:
        threshold: calls failed in a row that open the circuit.
        cooldown: seconds the circuit stays open before one probe call may go through.
        clock: seconds, monotonic (injectable for tests).
    """

    threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    cooldown: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    clock: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)


class CircuitBreaker:
    """One provider's circuit (see the module docstring); :func:`calbridge.send` drives it.

    :meth:`enter` before a call (raises :class:`~calbridge.errors.Unavailable` when the
    circuit is open), then exactly one of :meth:`succeeded`, :meth:`failed` or
    :meth:`released` (neither: the call says nothing about the provider's health).
    """

    def __init__(self, provider: str, policy: BreakerPolicy | None = None) -> None:
        self.provider = provider
        self.policy = policy or BreakerPolicy()
        self._clock = self.policy.clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.provider!r}, state={self.state!r})"

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open`` (open, cooldown over, probe allowed)."""
        with self._lock:
            if self._state == "open" and self._remaining() <= 0:
                return "half_open"
            return self._state

    @property
    def failures(self) -> int:
        """Calls failed in a row so far."""
        return self._failures

    def _remaining(self) -> float:
        return self._opened_at + self.policy.cooldown - self._clock()

    def enter(self) -> bool:
        """Before a call. Returns whether this call is the half-open probe.

        Raises:
            Unavailable: the circuit is open (``retry_after``: seconds until a probe may
                go), or the probe is out.
        """
        if self._state == "closed":  # the usual case: no lock, no clock
            return False
        with self._lock:
            current: State = self._state  # another thread may have closed it meanwhile
            if current == "closed":
                return False
            remaining = self._remaining()
            if remaining > 0:
                raise Unavailable(
                    f"{self.provider} failed {self._failures} calls in a row; calls are "
                    f"paused for {remaining:.1f} s more (circuit breaker open)",
                    provider=self.provider,
                    retry_after=remaining,
                )
            if self._probing:
                raise Unavailable(
                    f"{self.provider} is being probed after failing; retry shortly "
                    "(circuit breaker half-open)",
                    provider=self.provider,
                    retry_after=_PROBE_WAIT,
                )
            self._probing = True
            return True

    def succeeded(self, probe: bool = False) -> None:
        """The provider answered (2xx, 3xx or 4xx)."""
        if self._state == "closed" and not self._failures:
            return
        with self._lock:
            if probe:
                self._probing = False
            if self._state != "closed":
                log.info("%s answered again: circuit closed", self.provider)
            self._state = "closed"
            self._failures = 0

    def failed(self, probe: bool = False) -> None:
        """The call failed for the provider's sake (5xx after retries, timeout, network)."""
        with self._lock:
            if probe:
                self._probing = False
            self._failures += 1
            if self._state == "closed" and self._failures < self.policy.threshold:
                return
            if self._state == "closed":
                log.warning(
                    "%s failed %d calls in a row: circuit open, calls fail fast for %g s",
                    self.provider,
                    self._failures,
                    self.policy.cooldown,
                )
            self._state = "open"
            self._opened_at = self._clock()

    def released(self, probe: bool = False) -> None:
        """The call ended saying nothing of the provider's health (429, cancelled ...)."""
        if probe:
            with self._lock:
                self._probing = False


_create_lock = threading.Lock()


def circuit_breaker(client: httpx.AsyncClient, provider: str) -> CircuitBreaker | None:
    """The breaker of ``provider`` on this shared client (None when the client has none:
    clients not made by :func:`calbridge.make_http_client`, or made with ``breaker=None``).
    """
    breakers: dict[str, CircuitBreaker] | None = getattr(client, "breakers", None)
    if breakers is None:
        return None
    breaker = breakers.get(provider)
    if breaker is None:
        policy: BreakerPolicy = getattr(client, "breaker_policy", None) or BreakerPolicy()
        with _create_lock:
            breaker = breakers.setdefault(provider, CircuitBreaker(provider, policy))
    return breaker
