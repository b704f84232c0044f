"""The shared HTTP layer: one ``httpx.AsyncClient`` per bridge, retries, rate limits.

Providers never build clients; they receive one and send through :func:`send`, which
retries idempotent requests on connection errors, timeouts, 429, 502, 503 and 504 with
exponential backoff and full jitter (tenacity), honours ``Retry-After`` (delay-seconds,
fractional too, or an HTTP-date), and surfaces a wait longer than the policy allows as a
typed error carrying the delay, so a job can be rescheduled instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import http.cookiejar
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import httpx
import tenacity

from ._breaker import BreakerPolicy, CircuitBreaker, circuit_breaker
from ._budget import RateBudget, rate_budget
from ._tracing import PROVIDER, SpanKind, span
from ._transport import LoopLocalTransport
from ._version import __version__
from .errors import ProviderResponseError, RateLimited, Unavailable

__all__ = [
    "RateLimiter",
    "RetryPolicy",
    "make_http_client",
    "parse_retry_after",
    "read_json",
    "redact_url",
    "send",
]

_DEFAULT_BREAKER = BreakerPolicy()
log = logging.getLogger("calbridge.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})


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
    """The shared client: an :class:`httpx.AsyncClient` whose cookie jar stays empty, and
    which carries one circuit breaker per provider (see :func:`calbridge.circuit_breaker`).
    """

    def __init__(self, *, breaker: BreakerPolicy | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._jar = _NoCookies()
        self.breaker_policy = breaker
        self.breakers: dict[str, CircuitBreaker] | None = {} if breaker is not None else None
        #: the application-wide budgets calls are taken from (see calbridge.install_rate_budget)
        self.rate_budgets: dict[str, RateBudget] = {}

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise TypeError("the shared client keeps no cookies (pass them per request)")


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


def redact_url(url: httpx.URL | str) -> str:
    """The URL without its query string (queries may carry codes or tokens)."""
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when absent or garbage.

    Accepts delay-seconds (``"120"``, ``"1.5"`` as Graph sends) and HTTP-dates.
    Negative or past values become 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How :func:`send` retries.

    ``max_wait`` caps any single wait: a ``Retry-After`` beyond it raises
    :class:`~calbridge.errors.RateLimited` (429) or :class:`~calbridge.errors.Unavailable`
    carrying ``retry_after`` rather than sleeping.
    """

    attempts: int = 4
    initial_backoff: float = 0.25
    max_backoff: float = 8.0
    max_wait: float = 30.0

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in ``[0, min(max_backoff, initial * 2**(attempt-1))]``."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** max(0, attempt - 1))
        return float(rng()) * ceiling


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


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
    """Send ``request`` with retries; return the final response (any status).

    Args:
        idempotent: whether the request may be repeated. Defaults to the method's nature
            (GET, PUT, DELETE ... yes; POST, PATCH no). Pass True for a POST that carries
            an idempotency key. Non-idempotent requests are retried only when the request
            surely did not reach the server (connect errors) or was refused with 429.
        sleep, rng, clock: injectable for tests (fake clock).

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
    attributes = {
        PROVIDER: provider,
        "http.request.method": request.method,
        "server.address": request.url.host,  # never the path or query: ids, emails, tokens
    }
    with span(request.method, kind=SpanKind.CLIENT, **attributes) as current:
        response = await _guarded(client, request, provider, policy, idempotent, sleep, rng, clock)
        if current is not None and current.is_recording():
            current.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                current.set_attribute("error.type", str(response.status_code))
        return response


async def _guarded(  # noqa: PLR0917 - send's arguments, passed on
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    policy: RetryPolicy | None,
    idempotent: bool | None,
    sleep: Callable[[float], Awaitable[None]],
    rng: Callable[[], float],
    clock: Callable[[], float],
) -> httpx.Response:
    """:func:`send` through the provider's circuit breaker, when the client has one."""
    breaker = circuit_breaker(client, provider)
    if breaker is None:
        return await _send(client, request, provider, policy, idempotent, sleep, rng, clock)
    probe = await breaker.aenter()
    try:
        response = await _send(client, request, provider, policy, idempotent, sleep, rng, clock)
    except Unavailable:
        await breaker.afailed(probe)
        raise
    except BaseException:
        breaker.released_soon(probe)
        raise
    status = response.status_code
    if status >= 500:
        await breaker.afailed(probe)
    elif status == 429:
        await breaker.areleased(probe)
    else:
        await breaker.asucceeded(probe)
    return response


async def _send(  # noqa: PLR0917 - send's arguments, passed on
    client: httpx.AsyncClient,
    request: httpx.Request,
    provider: str,
    policy: RetryPolicy | None,
    idempotent: bool | None,
    sleep: Callable[[float], Awaitable[None]],
    rng: Callable[[], float],
    clock: Callable[[], float],
) -> httpx.Response:
    policy = policy or RetryPolicy()
    may_repeat = request.method in IDEMPOTENT_METHODS if idempotent is None else idempotent

    def should_retry(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return False
        if isinstance(exc, _RetryableStatus):
            return may_repeat or exc.response.status_code == 429
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
            return True
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            return may_repeat
        return False

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableStatus):
            hinted = parse_retry_after(exc.response.headers.get("retry-after"), now=clock())
            if hinted is not None:
                if hinted > policy.max_wait:
                    raise _too_long(exc.response, hinted, provider)
                return hinted
        return float(policy.backoff(state.attempt_number, rng))

    # Each attempt takes a grant from the application's shared budget (when the client has
    # one and the provider counts the call); a 429 pauses that budget for every process.
    budget = rate_budget(client, provider)
    if budget is not None and not budget.counts(request):
        budget = None

    async def attempt() -> httpx.Response:
        if budget is None:
            return _unlinked(await client.send(request))
        await budget.acquire(max_wait=policy.max_wait)
        response = _unlinked(await client.send(request))
        if response.status_code == 429:
            hinted = parse_retry_after(response.headers.get("retry-after"), now=clock())
            await budget.apause(hinted)
        return response

    # The happy path needs no retry machinery (it costs more than building the request):
    # the first attempt is made plainly, and only a failure enters the retry loop, whose
    # attempt 1 then replays that outcome, so waits and attempt counts are unchanged.
    first: list[Exception] = []
    try:
        response = await attempt()
    except Exception as exc:  # replayed below, for should_retry to judge
        first.append(exc)
    else:
        if response.status_code not in RETRY_STATUSES:
            return response
        first.append(_RetryableStatus(response))

    async def once() -> httpx.Response:
        if first:
            raise first.pop()
        response = await attempt()
        if response.status_code in RETRY_STATUSES:
            raise _RetryableStatus(response)
        return response

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        retry=should_retry,
        sleep=sleep,
        reraise=True,
        before_sleep=lambda s: log.info(
            "%s %s retry %d", request.method, redact_url(request.url), s.attempt_number
        ),
    )
    try:
        return await retrying(once)
    except _RetryableStatus as exc:
        response = exc.response
        hinted = parse_retry_after(response.headers.get("retry-after"), now=clock())
        if hinted is not None and hinted > policy.max_wait:
            raise _too_long(response, hinted, provider) from None
        return response
    except httpx.TimeoutException as exc:
        raise Unavailable(
            f"{request.method} {redact_url(request.url)} timed out ({type(exc).__name__})",
            provider=provider,
        ) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        raise Unavailable(
            f"{request.method} {redact_url(request.url)} failed: {type(exc).__name__}",
            provider=provider,
        ) from None


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


def _too_long(response: httpx.Response, seconds: float, provider: str) -> Exception:
    if response.status_code == 429:
        return RateLimited(
            "the provider throttled this call", provider=provider, retry_after=seconds
        )
    return Unavailable(
        f"the provider is unavailable; retry after {seconds:g} s",
        provider=provider,
        status=response.status_code,
        retry_after=seconds,
    )


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
