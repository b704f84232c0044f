"""The shared HTTP layer: one ``httpx.AsyncClient`` per bridge, and :func:`send`.

Providers never build clients; they receive the one :func:`make_http_client` made, whose
transport (:class:`calbridge._resilience.ResilientTransport`) retries provider calls,
drives the providers' circuit breakers and takes their grants from the shared rate
budgets. :func:`send` marks a request as a call to a provider and sends it; a plugin may
do the same with :class:`calbridge.ProviderCall` and ``client.send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import httpx

from ._breaker import BreakerPolicy, CircuitBreaker, circuit_breaker
from ._budget import RateBudget, rate_budget
from ._resilience import (
    IDEMPOTENT_METHODS,
    RETRY_STATUSES,
    CallCounter,
    ProviderCall,
    ResilientTransport,
    RetryPolicy,
    call_counter,
    mark_streamed,
    parse_retry_after,
    redact_url,
)
from ._transport import LoopLocalTransport
from ._version import __version__
from .errors import ProviderResponseError

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "ProviderCall",
    "RateLimiter",
    "RetryPolicy",
    "make_http_client",
    "parse_retry_after",
    "read_json",
    "redact_url",
    "send",
    "signal_when_sent",
]

_DEFAULT_BREAKER = BreakerPolicy()


#: a cookie policy that accepts no cookie from any domain
_NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


class _NoCookies(httpx.Cookies):
    """A jar that stays empty: a response's ``Set-Cookie`` is not even parsed (httpx's
    extraction builds urllib request and response shims for every answer)."""

    def __init__(self) -> None:
        super().__init__(http.cookiejar.CookieJar(_NO_COOKIES))

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("the shared client keeps no cookies (pass them per request)")


class _SharedClient(httpx.AsyncClient):
    """The shared client: an :class:`httpx.AsyncClient` whose cookie jar stays empty, sending
    through a :class:`~calbridge._resilience.ResilientTransport` (which holds one circuit
    breaker per provider, see :func:`calbridge.circuit_breaker`, and the rate budgets,
    see :func:`calbridge.install_rate_budget`).

    Its :meth:`send` tells the transport whether the caller streams the answer, and
    unlinks a read answer from its stream (see :func:`_unlinked`).
    """

    def __init__(
        self, *, transport: httpx.AsyncBaseTransport, breaker: BreakerPolicy | None, **kwargs: Any
    ) -> None:
        self.resilience = ResilientTransport(transport, breaker=breaker)
        super().__init__(transport=self.resilience, **kwargs)
        self._jar = _NoCookies()

    @property
    def breaker_policy(self) -> BreakerPolicy | None:
        return self.resilience.breaker_policy

    @property
    def breakers(self) -> dict[str, CircuitBreaker] | None:
        return self.resilience.breakers

    @property
    def rate_budgets(self) -> dict[str, RateBudget]:
        """The application-wide budgets calls are taken from (see install_rate_budget)."""
        return self.resilience.rate_budgets

    @property
    def call_counter(self) -> CallCounter | None:
        """Told each provider call attempt's outcome (see :func:`count_calls`)."""
        return self.resilience.call_counter

    @call_counter.setter
    def call_counter(self, counter: CallCounter | None) -> None:
        self.resilience.call_counter = counter

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("the shared client keeps no cookies (pass them per request)")

    async def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        if ProviderCall.of(request) is not None:
            mark_streamed(request, stream)
        response = await super().send(request, stream=stream, **kwargs)
        return response if stream else _unlinked(response)


def make_http_client(
    *,
    timeout: float = 30.0,
    connect_timeout: float = 10.0,
    max_connections: int = 100,
    max_keepalive: int = 20,
    transport: httpx.AsyncBaseTransport | None = None,
    user_agent: str | None = None,
    verify: ssl.SSLContext | str | bool = True,
    breaker: BreakerPolicy | None = _DEFAULT_BREAKER,
) -> httpx.AsyncClient:
    """The client a bridge shares with all its providers (HTTP/1.1 keep-alive, pooled).

    ``verify`` is httpx's: True checks certificates against the system's trust store
    (certifi), a path or an :class:`ssl.SSLContext` trusts a private CA (a TLS sandbox, a
    corporate proxy); False is for nothing but experiments.

    The client keeps no cookies: it is shared by every user's calls, so a cookie one
    user's response set (a load balancer's affinity, a session) must not ride along on
    another user's requests.

    Requests go through httpx's own transport (one pool per event loop, so one client may
    serve successive loops; idle connections close after 5 s) unless ``transport`` is
    given: e.g. ``httpx.AsyncHTTPTransport(http2=True)``, a ``MockTransport`` or an
    ``ASGITransport`` in tests. ``max_connections`` and ``max_keepalive`` bound the pool.

    Whatever the transport, it is wrapped in one that makes provider calls (requests
    marked with a :class:`calbridge.ProviderCall`, as :func:`send` marks them) resilient:
    retries, ``Retry-After``, the provider's circuit breaker and rate budget, a client
    span (see :mod:`calbridge._resilience`). Other requests pass straight through.

    ``breaker`` sets when a provider's circuit opens (by default after 5 calls failed in a
    row, for 30 seconds; see :class:`calbridge.BreakerPolicy`); None turns breakers off.
    """
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_keepalive,
        keepalive_expiry=5.0,
    )
    if transport is None:
        transport = LoopLocalTransport(verify=verify, limits=limits)
    return _SharedClient(
        breaker=breaker,
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        limits=limits,
        headers={"User-Agent": user_agent or f"calbridge/{__version__}"},
        transport=transport,
        follow_redirects=False,
    )


def read_json(response: httpx.Response, *, provider: str, what: str = "the answer") -> Any:
    """The response's JSON, or :class:`~calbridge.errors.ProviderResponseError` naming ``what``."""
    try:
        return response.json()
    except ValueError:
        raise ProviderResponseError(
            f"{what}: the answer is not JSON", provider=provider, status=response.status_code
        ) from None


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    provider: str,
    policy: RetryPolicy | None = None,
    idempotent: bool | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    clock: Callable[[], float] = time.time,
) -> httpx.Response:
    """Send ``request`` as a call to ``provider`` with retries; return the final response
    (any status).

    Args:
        idempotent: whether the request may be repeated. Defaults to the method's nature
            (GET, PUT, DELETE ... yes; POST, PATCH no). Pass True for a POST that carries
            an idempotency key. Non-idempotent requests are retried only when the request
            surely did not reach the server (connect errors) or was refused with 429.
        sleep, rng, clock: injectable for tests (fake clock).

    It marks the request with a :class:`calbridge.ProviderCall` of these arguments and
    sends it with ``client.send``: on the shared client (:func:`make_http_client`) its
    transport does the rest, as it does for any request so marked. Any other client (a
    test's ``httpx.AsyncClient`` over a ``MockTransport``) gets the same retries,
    ``Retry-After`` handling, span and rate budget (one installed on it) around its
    ``send``; such a client has no circuit breaker.

    The call goes through the provider's circuit breaker when the client has one (the
    shared client does: see :class:`calbridge.BreakerPolicy`): an open circuit raises at
    once, and the call's outcome (a 5xx after the retries, a timeout or a lost connection
    is a failure; any other answer a success; a 429 neither) moves the breaker. A breaker
    shared through the store (:func:`calbridge._breaker.share_circuit_breaker`) is read
    and written off the event loop, and not at all on a healthy circuit's calls but for a
    read of its state at most once per ``BreakerPolicy.refresh`` seconds.

    When the client carries a rate budget for ``provider`` (see
    :func:`calbridge.install_rate_budget`; the runtime installs one per provider), every
    attempt of a counted call (not OAuth token endpoint calls) first takes a grant from
    it, and a 429 pauses it for every process on the store.

    Each call is an OpenTelemetry client span (:mod:`calbridge._tracing`) named by the
    method, with the provider, the host and the final status, never the path or query.

    Raises:
        Unavailable: connection errors or timeouts persisted, a 5xx asked to wait too long,
            or the provider's circuit is open (``retry_after``: seconds until it may close).
        RateLimited: a 429 asked to wait longer than ``policy.max_wait``, or the shared
            budget is paused for longer than that.
    """
    call = ProviderCall(
        provider=provider,
        policy=policy or RetryPolicy(),
        idempotent=idempotent,
        sleep=sleep,
        rng=rng,
        clock=clock,
    )
    if isinstance(client, _SharedClient):  # its transport makes the call
        return await client.send(call.apply(request))

    async def attempt(request: httpx.Request) -> httpx.Response:
        return _unlinked(await client.send(request))

    return await call.run(
        request,
        attempt,
        breaker=circuit_breaker(client, provider),
        budget=rate_budget(client, provider),
        counter=call_counter(client),
    )


#: ``trace`` extension events after which a request is on the wire (or will not be):
#: httpcore's names
_SENT_EVENTS: Final = frozenset(
    {
        "http11.send_request_body.complete",
        "http11.send_request_body.failed",
        "http2.send_request_body.complete",
        "http2.send_request_body.failed",
        "connection.connect_tcp.failed",
    }
)


def signal_when_sent(
    sent: asyncio.Future[None],
) -> Callable[[str, Mapping[str, Any]], Awaitable[None]]:
    """A ``trace`` request extension that resolves ``sent`` once the request is written to
    the connection (or could not be).

    For prefetching the next page of a read: start its request in a task with
    ``extensions={"trace": signal_when_sent(sent)}``, wait for the task or ``sent``,
    whichever comes first, then hand out the page in hand; the provider works on the next
    one while the caller converts this one. Transports that report no trace events
    (``MockTransport``, ``ASGITransport``) never resolve it: the task's end does.
    """

    async def trace(event: str, _info: Mapping[str, Any]) -> None:
        if event in _SENT_EVENTS and not sent.done():
            sent.set_result(None)

    return trace


def _unlinked(response: httpx.Response) -> httpx.Response:
    """``response`` without httpx's reference cycle, once its body is read.

    httpx wraps a response's stream in one that points back at the response, so every
    response is cyclic garbage: freed only when the garbage collector next runs, with its
    body (a 94 KB Cronofy page) and request. A read and closed response needs its stream
    no more; a plain one over the same bytes frees it by reference counting, as soon as
    the caller lets go.
    """
    if response.is_closed:
        with contextlib.suppress(httpx.ResponseNotRead):  # closed unread: leave it be
            response.stream = httpx.ByteStream(response.content)
    return response


@attrs.define
class RateLimiter:
    """A client-side sliding-window limiter: at most ``limit`` calls per ``period`` seconds.

    Several limiters can be stacked (Cronofy: 50/s and 500/min per application)::

        async with per_second, per_minute:
            await send(...)
    """

    limit: int
    period: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _stamps: deque[float] = attrs.field(init=False, factory=deque)
    _lock: asyncio.Lock = attrs.field(init=False, factory=asyncio.Lock)

    async def acquire(self) -> None:
        """Wait until one more call fits in the window, then record it."""
        async with self._lock:
            while True:
                now = self.clock()
                while self._stamps and self._stamps[0] <= now - self.period:
                    self._stamps.popleft()
                if len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return
                await self.sleep(self._stamps[0] + self.period - now)

    async def __aenter__(self) -> RateLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
