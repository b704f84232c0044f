"""Circuit breakers: a provider that keeps failing is left alone for a while.

During a provider's outage every sync job, token refresh and app call would go on sending
requests, each retried with backoff by the shared client's transport
(:mod:`calbridge._resilience`, for every provider call): load on a service that is
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

Shared state: :func:`share_circuit_breaker` makes a client's breaker of one provider
share its state with every process on the same store (SQLite file or PostgreSQL
database), per provider and application (client id), in the ``circuit_breaker`` table:
closed or open, the calls failed in a row (across processes), when it opened, and the
half-open probe out. Process A's five failures open the circuit for process B too, and
after the cooldown exactly one probe goes out across all of them (a probe whose process
died is given up after ``probe_timeout``). Each state change is one short write
transaction (a failure; the first success after failures; a probe claimed or ended); a
closed, healthy circuit writes nothing and reads the row at most once per ``refresh``
seconds (the other processes learn of an opening within that time). Provider calls (the
shared client's transport, :mod:`calbridge._resilience`) go through
:meth:`CircuitBreaker.aenter` and friends, which
reach the database only through :func:`calbridge.store.offload`, never on the event loop.
On PostgreSQL the database's clock is used, so processes on several hosts agree on the
cooldown. (A provider-wide *pause* stored in the database is something else: it is for
refused app credentials; see ``Store.pause_provider``.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import httpx

from ._circuit_store import CircuitView, SharedCircuit
from .errors import Unavailable

if TYPE_CHECKING:
    from .store import Engine

__all__ = [
    "BreakerPolicy",
    "CircuitBreaker",
    "CircuitView",
    "SharedCircuit",
    "circuit_breaker",
    "share_circuit_breaker",
]

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
        clock: seconds, monotonic (injectable for tests; a shared circuit uses the
            store's clock instead, see :class:`SharedCircuit`).
        refresh: a shared circuit's state is read from the store at most once per
            ``refresh`` seconds while nothing happens (how soon the other processes learn
            that a circuit opened or closed).
        probe_timeout: a shared circuit's probe not heard of for this long (its process
            died) is given up, and another may go.
    """

    threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    cooldown: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    clock: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)
    refresh: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    probe_timeout: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


class CircuitBreaker:
    """One provider's circuit (see the module docstring); provider calls drive it
    (:class:`calbridge._resilience.ResilientTransport`, :func:`calbridge.send`).

    :meth:`enter` before a call (raises :class:`~calbridge.errors.Unavailable` when the
    circuit is open), then exactly one of :meth:`succeeded`, :meth:`failed` or
    :meth:`released` (neither: the call says nothing about the provider's health). Async
    code calls :meth:`aenter`, :meth:`asucceeded`, :meth:`afailed` and :meth:`areleased`:
    the same, with a shared circuit's store calls made off the event loop.

    With ``shared`` (see :func:`share_circuit_breaker`) the state is the store's, cached
    for ``policy.refresh`` seconds; the synchronous methods then call the store directly.
    """

    def __init__(
        self,
        provider: str,
        policy: BreakerPolicy | None = None,
        *,
        shared: SharedCircuit | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy or BreakerPolicy()
        self._clock = self.policy.clock
        self._lock = threading.Lock()
        self._state: Literal["closed", "open"] = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.shared = shared
        self._view: CircuitView | None = None
        self._refreshing = False
        self._probe_id: str | None = None
        self._probe_deadline = 0.0  # on the policy's clock: this process's probe is given up
        self._pending: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.provider!r}, state={self.state!r})"

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open`` (open, cooldown over, probe allowed).

        For a shared circuit, as last read from the store (at most ``refresh`` old while
        calls are made; see :meth:`refresh`)."""
        if self.shared is not None:
            view = self._view
            if view is None or view.state == "closed":
                return "closed"
            return "half_open" if self._shared_remaining(view) <= 0 else "open"
        with self._lock:
            if self._state == "open" and self._remaining() <= 0:
                return "half_open"
            return self._state

    @property
    def failures(self) -> int:
        """Calls failed in a row so far (for a shared circuit: in every process)."""
        if self.shared is not None:
            return self._view.failures if self._view is not None else 0
        return self._failures

    def refresh(self) -> CircuitView | None:
        """A shared circuit: read the store's state now (None for a per-process circuit)."""
        if self.shared is None:
            return None
        view = self.shared.read()
        self._view = view
        return view

    def _remaining(self) -> float:
        return self._opened_at + self.policy.cooldown - self._clock()

    def _shared_remaining(self, view: CircuitView) -> float:
        return (view.opened_ms + self.policy.cooldown * 1000 - view.now()) / 1000

    def _open_error(self, failures: int, remaining: float) -> Unavailable:
        return Unavailable(
            f"{self.provider} failed {failures} calls in a row; calls are "
            f"paused for {remaining:.1f} s more (circuit breaker open)",
            provider=self.provider,
            retry_after=remaining,
        )

    def _probe_error(self) -> Unavailable:
        return Unavailable(
            f"{self.provider} is being probed after failing; retry shortly "
            "(circuit breaker half-open)",
            provider=self.provider,
            retry_after=_PROBE_WAIT,
        )

    # -- per process ------------------------------------------------------------------

    def enter(self) -> bool:
        """Before a call. Returns whether this call is the half-open probe.

        Raises:
            Unavailable: the circuit is open (``retry_after``: seconds until a probe may
                go), or the probe is out.
        """
        if self.shared is not None:
            return self._shared_enter()
        if self._state == "closed":  # the usual case: no lock, no clock
            return False
        with self._lock:
            current: State = self._state  # another thread may have closed it meanwhile
            if current == "closed":
                return False
            remaining = self._remaining()
            if remaining > 0:
                raise self._open_error(self._failures, remaining)
            if self._probing:
                raise self._probe_error()
            self._probing = True
            return True

    def succeeded(self, probe: bool = False) -> None:
        """The provider answered (2xx, 3xx or 4xx)."""
        if self.shared is not None:
            if not self._quiet_success(probe):
                self._shared_succeeded(probe)
            return
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
        if self.shared is not None:
            self._shared_failed(probe)
            return
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
        if not probe:
            return
        if self.shared is not None:
            self._shared_released()
            return
        with self._lock:
            self._probing = False

    # -- shared through the store -----------------------------------------------------

    def _fast_enter(self) -> bool | None:
        """A shared circuit's :meth:`enter` from the cached state: False (closed), raises
        (open, or the probe is out), or None when the store must be asked."""
        view = self._view
        if view is None:
            return None
        if view.age() >= self.policy.refresh and not self._refreshing:
            return None  # stale (while another call refreshes it, the last state serves)
        if view.state == "closed":
            return False
        remaining = self._shared_remaining(view)
        if remaining > 0:
            raise self._open_error(view.failures, remaining)
        if self._probe_id is not None and self._clock() < self._probe_deadline:
            raise self._probe_error()  # this process's probe is out
        if view.probe_id is not None and view.probe_until_ms > view.now():
            raise self._probe_error()  # another process's
        return None  # the probe may be claimed

    def _shared_enter(self) -> bool:
        assert self.shared is not None
        fast = self._fast_enter()
        if fast is not None:
            return fast
        view = self._view
        if view is None or view.age() >= self.policy.refresh:
            self._refreshing = True
            try:
                view = self.refresh()
            finally:
                self._refreshing = False
            assert view is not None
        if view.state == "closed":
            return False
        remaining = self._shared_remaining(view)
        if remaining > 0:
            raise self._open_error(view.failures, remaining)
        with self._lock:
            if self._probe_id is not None and self._clock() < self._probe_deadline:
                raise self._probe_error()
            probe_id = uuid.uuid4().hex
            self._probe_id = probe_id
            self._probe_deadline = self._clock() + self.policy.probe_timeout
        claimed = False
        try:
            view = self.shared.claim_probe(
                self.policy.cooldown, self.policy.probe_timeout, probe_id
            )
            self._view = view
            claimed = view.probe_id == probe_id
        finally:
            if not claimed:
                with self._lock:
                    if self._probe_id == probe_id:
                        self._probe_id = None
        if claimed:
            return True
        if view.state == "closed":
            return False
        remaining = self._shared_remaining(view)
        if remaining > 0:
            raise self._open_error(view.failures, remaining)
        raise self._probe_error()

    def _take_probe(self, probe: bool) -> str | None:
        if not probe:
            return None
        with self._lock:
            probe_id, self._probe_id = self._probe_id, None
            return probe_id

    def _quiet_success(self, probe: bool) -> bool:
        """A success that changes nothing: closed, no failure in a row (as last read)."""
        view = self._view
        return not probe and (view is None or (view.state == "closed" and not view.failures))

    def _shared_succeeded(self, probe: bool) -> None:
        assert self.shared is not None
        self._view = self.shared.succeed(self._take_probe(probe))

    def _shared_failed(self, probe: bool) -> None:
        assert self.shared is not None
        self._view = self.shared.fail(self.policy.threshold, self._take_probe(probe))

    def _shared_released(self) -> None:
        assert self.shared is not None
        probe_id = self._take_probe(True)
        if probe_id is not None:
            self._view = self.shared.release(probe_id)

    # -- the async surface ------------------------------------------------------------

    async def aenter(self) -> bool:
        """:meth:`enter` for async code: a shared circuit's store calls run off the loop
        (none at all while the circuit is closed and its state was read recently)."""
        if self.shared is None:
            return self.enter()
        fast = self._fast_enter()
        if fast is not None:
            return fast
        from .store import offload

        return await offload(self._shared_enter)

    async def asucceeded(self, probe: bool = False) -> None:
        """:meth:`succeeded` for async code (writes only when it changes something)."""
        if self.shared is None or self._quiet_success(probe):
            self.succeeded(probe)
            return
        await self._report(self._shared_succeeded, probe)

    async def afailed(self, probe: bool = False) -> None:
        """:meth:`failed` for async code."""
        if self.shared is None:
            self.failed(probe)
            return
        await self._report(self._shared_failed, probe)

    async def areleased(self, probe: bool = False) -> None:
        """:meth:`released` for async code."""
        if self.shared is None or not probe:
            self.released(probe)
            return
        await self._report(lambda _probe: self._shared_released(), probe)

    def released_soon(self, probe: bool = False) -> None:
        """:meth:`released` from code that must not wait (a cancelled call): a shared
        probe is given back in the background."""
        if self.shared is None or not probe:
            self.released(probe)
            return
        future = asyncio.ensure_future(self._report(lambda _probe: self._shared_released(), True))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _report(self, fn: Callable[[bool], None], probe: bool) -> None:
        """Record a call's outcome in the store. A store error is logged, not raised: the
        call's own answer (or error) matters more to its caller."""
        from .store import offload

        try:
            await offload(fn, probe)
        except Exception:
            log.warning(
                "%s: could not record the call in the shared circuit breaker",
                self.provider,
                exc_info=True,
            )


_create_lock = threading.Lock()


def circuit_breaker(
    client: httpx.AsyncClient | httpx.AsyncBaseTransport, provider: str
) -> CircuitBreaker | None:
    """The breaker of ``provider`` on this shared client, or on its transport (None when
    the client has none: clients not made by :func:`calbridge.make_http_client`, or made
    with ``breaker=None``).
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


def share_circuit_breaker(
    client: httpx.AsyncClient,
    engine: Engine,
    *,
    provider: str,
    app: str,
    clock: Callable[[], float] | None = None,
) -> CircuitBreaker | None:
    """Make ``provider``'s breaker on ``client`` share its state with every process on
    ``engine``'s store, per provider and application ``app`` (the client id); returns it
    (None when the client has no breakers). ``clock``: see :class:`SharedCircuit`."""
    breaker = circuit_breaker(client, provider)
    if breaker is not None:
        breaker.shared = SharedCircuit(engine, provider=provider, app=app, clock=clock)
        breaker._view = None
    return breaker
