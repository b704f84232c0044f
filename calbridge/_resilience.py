"""Retries, the circuit breaker and the rate budget, as the shared client's transport.

:func:`calbridge.make_http_client` wraps the transport that does the I/O (httpx's own,
one pool per event loop, or a test's) in a :class:`ResilientTransport`. A request that
carries a :class:`ProviderCall` (an extension set by :meth:`ProviderCall.apply`, which
:func:`calbridge.send` does) is sent as a call to that provider, whoever sends it
(``calbridge.send``, :class:`calbridge.toolkit.AuthorizedClient`, or a plugin calling
``client.send`` itself):

- an OpenTelemetry client span (:mod:`calbridge._tracing`) named by the method, with the
  provider, the host and the final status (never the path or query);
- the provider's circuit breaker (:mod:`calbridge._breaker`): an open circuit raises
  :class:`~calbridge.errors.Unavailable` at once; a 5xx after the retries, a timeout or a
  lost connection is a failure, a 429 neither failure nor success, any other answer a
  success;
- retries (tenacity) of idempotent requests on connection errors, timeouts, 429, 502,
  503 and 504, with exponential backoff and full jitter; a non-idempotent request only
  when it surely did not reach the server (connect errors) or was refused with 429.
  ``Retry-After`` is honoured (delay-seconds, fractional too, or an HTTP-date), and a wait
  longer than the policy allows raises :class:`~calbridge.errors.RateLimited` (429) or
  :class:`~calbridge.errors.Unavailable` carrying ``retry_after``, so a job can be
  rescheduled instead of sleeping. The answer of a failed attempt is closed before the
  next attempt;
- before each attempt of a counted call (not OAuth token endpoint calls) a grant from the
  provider's application-wide rate budget (:mod:`calbridge._budget`), when one is
  installed; a 429 pauses it for every process on the store;
- after each attempt, its outcome to the client's call counter (:func:`count_calls`; the
  runtime's :class:`calbridge._tally.Tally`, for ``GET /metrics``), when one is set: the
  status class (``2xx``, ``3xx``, ``4xx``, ``429``, ``5xx``) or ``error`` (no answer: the
  connection failed or timed out).

A request without the extension passes straight through: no span, no retry, no breaker,
no budget. The transport does not guess the provider from the host (a CalDAV server or a
sandbox can be any host, and one host may serve OAuth and API calls counted differently).

Bodies: the transport reads a provider call's answer in full before judging it, so an
error while reading the body is an attempt's failure (retried as such, or raised as
``Unavailable``) exactly as when the answer's headers never came. A streamed send
(``client.send(request, stream=True)``, ``client.stream(...)``) on the shared client is
not read ahead: its status is judged (retried, breaker, budget) before the body is read,
and an error while the caller reads the body is the caller's, raw httpx, not retried.
A request body that cannot be sent twice (an async generator) fails on a retry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import attrs
import httpx
import tenacity

from ._breaker import BreakerPolicy, CircuitBreaker, circuit_breaker
from ._budget import RateBudget, rate_budget
from ._tracing import PROVIDER, SpanKind, span
from .errors import RateLimited, Unavailable

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "CallCounter",
    "ProviderCall",
    "ResilientTransport",
    "RetryPolicy",
    "call_counter",
    "count_calls",
    "parse_retry_after",
    "redact_url",
    "status_class",
]

log = logging.getLogger("calbridge.http")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})

#: the request extension a :class:`ProviderCall` travels in
_CALL: Final = "calbridge.call"
#: the request extension saying the caller streams the answer (set by the shared client)
_STREAMED: Final = "calbridge.streamed"


#: told ``(provider, outcome)`` after each attempt of a provider call (see :func:`count_calls`)
CallCounter = Callable[[str, str], None]


def count_calls(client: httpx.AsyncClient, counter: CallCounter | None) -> None:
    """Tell ``counter`` the outcome of every attempt of a provider call ``client`` makes
    (the shared client: every request marked with a :class:`ProviderCall`; another
    client: the calls :func:`calbridge.send` makes); None stops counting.

    The outcome is :func:`status_class` of the answer, or ``error`` when none came. The
    counter is called on the event loop on every attempt: it must only add in memory."""
    client.call_counter = counter  # type: ignore[attr-defined]


def call_counter(client: httpx.AsyncClient | httpx.AsyncBaseTransport) -> CallCounter | None:
    """The counter set on ``client`` (or on the shared client's transport), if any."""
    found: CallCounter | None = getattr(client, "call_counter", None)
    return found


def status_class(status: int) -> str:
    """How a provider call's status is counted: ``429`` apart, otherwise its class
    (``2xx`` ... ``5xx``)."""
    return "429" if status == 429 else f"{status // 100}xx"


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
    """How a provider call (:func:`calbridge.send`, :class:`ProviderCall`) is retried.

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


_DEFAULT_POLICY: Final = RetryPolicy()


@attrs.frozen(kw_only=True)
class ProviderCall:
    """Makes a request a call to ``provider`` on the shared client: retried by ``policy``,
    through the provider's circuit breaker and rate budget (see the module docstring).

    It travels in the request's extensions; a plugin sending with ``client.send`` itself
    marks its request so::

        call = calbridge.ProviderCall(provider=self.name, policy=self.retry_policy)
        response = await self.http.send(call.apply(self.http.build_request("GET", url)))
        async with self.http.stream("GET", url, extensions=call.extensions()) as answer: ...

    which is what :func:`calbridge.send` does (it also serves clients not made by
    :func:`calbridge.make_http_client`).

    Attributes:
        provider: the provider's name: its breaker's, its budget's and its errors'.
        policy: how the call is retried.
        idempotent: whether the request may be repeated; None: by its method (GET, PUT,
            DELETE ... yes; POST, PATCH no). True for a POST carrying an idempotency key.
        sleep, rng, clock: injectable for tests (fake clock, no jitter); ``clock`` (epoch
            seconds) dates an HTTP-date ``Retry-After``.
    """

    provider: str
    policy: RetryPolicy = _DEFAULT_POLICY
    idempotent: bool | None = None
    sleep: Callable[[float], Awaitable[None]] = attrs.field(
        default=asyncio.sleep, eq=False, repr=False
    )
    rng: Callable[[], float] = attrs.field(default=random.random, eq=False, repr=False)
    clock: Callable[[], float] = attrs.field(default=time.time, eq=False, repr=False)

    def apply(self, request: httpx.Request) -> httpx.Request:
        """Mark ``request`` (in place) as this call; returns it."""
        request.extensions[_CALL] = self
        return request

    def extensions(self) -> dict[str, Any]:
        """The request extensions marking a request as this call, for httpx's shortcuts:
        ``client.get(url, extensions=call.extensions())``, ``client.stream(...)``."""
        return {_CALL: self}

    @staticmethod
    def of(request: httpx.Request) -> ProviderCall | None:
        """The call ``request`` is marked as, or None (a plain request)."""
        found = request.extensions.get(_CALL)
        return found if isinstance(found, ProviderCall) else None

    def may_repeat(self, request: httpx.Request) -> bool:
        """Whether ``request`` may be sent again after it may have reached the server."""
        return request.method in IDEMPOTENT_METHODS if self.idempotent is None else self.idempotent

    async def run(
        self,
        request: httpx.Request,
        attempt: Callable[[httpx.Request], Awaitable[httpx.Response]],
        *,
        breaker: CircuitBreaker | None,
        budget: RateBudget | None,
        counter: CallCounter | None = None,
    ) -> httpx.Response:
        """Make the call: ``attempt`` sends ``request`` once (and reads the answer); this
        adds the span, the breaker, the budget, the retries and the counting around it."""
        if budget is not None and not budget.counts(request):
            budget = None
        return await _Exchange(self, request, attempt, breaker, budget, counter).run()


def mark_streamed(request: httpx.Request, stream: bool) -> None:
    """Tell the transport whether the caller streams ``request``'s answer (the shared
    client calls it on every send of a provider call)."""
    request.extensions[_STREAMED] = stream


class _RetryableStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@attrs.define
class _Exchange:
    """One provider call, from the span down to its attempts."""

    call: ProviderCall
    request: httpx.Request
    attempt_once: Callable[[httpx.Request], Awaitable[httpx.Response]]
    breaker: CircuitBreaker | None
    budget: RateBudget | None
    counter: CallCounter | None
    #: the answer of the last attempt, while it may still be retried (closed if it is)
    pending: httpx.Response | None = None

    async def run(self) -> httpx.Response:
        request = self.request
        attributes = {
            PROVIDER: self.call.provider,
            "http.request.method": request.method,
            "server.address": request.url.host,  # never the path or query: ids, emails, tokens
        }
        with span(request.method, kind=SpanKind.CLIENT, **attributes) as current:
            response = await self._guarded()
            if current is not None and current.is_recording():
                current.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 400:
                    current.set_attribute("error.type", str(response.status_code))
            return response

    async def _guarded(self) -> httpx.Response:
        """The call through the provider's circuit breaker, when there is one."""
        breaker = self.breaker
        if breaker is None:
            return await self._retried()
        probe = await breaker.aenter()
        try:
            response = await self._retried()
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

    async def _attempt(self) -> httpx.Response:
        """One attempt, after a grant from the budget (when the call is counted); the
        previous attempt's answer, being retried, is closed first."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending.aclose()
        budget = self.budget
        if budget is not None:
            await budget.acquire(max_wait=self.call.policy.max_wait)
        response = await self._counted()
        if budget is not None and response.status_code == 429:
            hinted = parse_retry_after(response.headers.get("retry-after"), now=self.call.clock())
            await budget.apause(hinted)
        return response

    async def _counted(self) -> httpx.Response:
        """The attempt itself, its outcome told to the counter (when there is one)."""
        counter = self.counter
        if counter is None:
            return await self.attempt_once(self.request)
        try:
            response = await self.attempt_once(self.request)
        except Exception:
            counter(self.call.provider, "error")
            raise
        counter(self.call.provider, status_class(response.status_code))
        return response

    async def _retried(self) -> httpx.Response:
        # The happy path needs no retry machinery (it costs more than building the request):
        # the first attempt is made plainly, and only a failure enters the retry loop, whose
        # attempt 1 then replays that outcome, so waits and attempt counts are unchanged.
        failed: Exception
        try:
            response = await self._attempt()
        except Exception as exc:  # replayed by the retry loop, for should_retry to judge
            failed = exc
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            self.pending = response
            failed = _RetryableStatus(response)
        return await self._retry(failed)

    async def _retry(self, outcome: Exception) -> httpx.Response:
        """The retry loop after a first attempt that ended in ``outcome``."""
        call, request = self.call, self.request
        policy = call.policy
        may_repeat = call.may_repeat(request)
        first = [outcome]

        def should_retry(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return False
            if isinstance(exc, _RetryableStatus):
                return may_repeat or exc.response.status_code == 429
            if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
                return True
            if isinstance(
                exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
            ):
                return may_repeat
            return False

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _RetryableStatus):
                hinted = parse_retry_after(
                    exc.response.headers.get("retry-after"), now=call.clock()
                )
                if hinted is not None:
                    if hinted > policy.max_wait:
                        raise _too_long(exc.response, hinted, call.provider)
                    return hinted
            return float(policy.backoff(state.attempt_number, call.rng))

        async def once() -> httpx.Response:
            if first:
                raise first.pop()
            response = await self._attempt()
            if response.status_code in RETRY_STATUSES:
                self.pending = response
                raise _RetryableStatus(response)
            return response

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(policy.attempts),
            wait=wait,
            retry=should_retry,
            sleep=call.sleep,
            reraise=True,
            before_sleep=lambda s: log.info(
                "%s %s retry %d", request.method, redact_url(request.url), s.attempt_number
            ),
        )
        try:
            return await retrying(once)
        except _RetryableStatus as exc:
            self.pending = None  # the answer the caller gets
            response = exc.response
            hinted = parse_retry_after(response.headers.get("retry-after"), now=call.clock())
            if hinted is not None and hinted > policy.max_wait:
                await response.aclose()
                raise _too_long(response, hinted, call.provider) from None
            return response
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"{request.method} {redact_url(request.url)} timed out ({type(exc).__name__})",
                provider=call.provider,
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise Unavailable(
                f"{request.method} {redact_url(request.url)} failed: {type(exc).__name__}",
                provider=call.provider,
            ) from None
        finally:
            if self.pending is not None:  # a wait too long for a retried answer
                pending, self.pending = self.pending, None
                await pending.aclose()


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


class ResilientTransport(httpx.AsyncBaseTransport):
    """Sends provider calls (requests carrying a :class:`ProviderCall`) through ``inner``
    with retries, the provider's circuit breaker and its rate budget (see the module
    docstring); other requests go to ``inner`` untouched.

    It holds the circuit breakers (one per provider, made on first use with ``breaker``;
    None turns them off) and the rate budgets installed on the shared client
    (:func:`calbridge.circuit_breaker`, :func:`calbridge.install_rate_budget` reach them
    through the client).
    """

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, breaker: BreakerPolicy | None = None
    ) -> None:
        self.inner = inner
        self.breaker_policy = breaker
        self.breakers: dict[str, CircuitBreaker] | None = {} if breaker is not None else None
        #: the application-wide budgets calls are taken from (see calbridge.install_rate_budget)
        self.rate_budgets: dict[str, RateBudget] = {}
        #: told each attempt's outcome (see :func:`count_calls`)
        self.call_counter: CallCounter | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = ProviderCall.of(request)
        if call is None:
            return await self.inner.handle_async_request(request)
        attempt = self._attempt if request.extensions.get(_STREAMED) else self._read_attempt
        return await call.run(
            request,
            attempt,
            breaker=circuit_breaker(self, call.provider),
            budget=rate_budget(self, call.provider),
            counter=self.call_counter,
        )

    async def _attempt(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def _read_attempt(self, request: httpx.Request) -> httpx.Response:
        """One attempt, its answer's body read (raw: the client decodes it) and closed."""
        response = await self.inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        try:
            body = b"".join([chunk async for chunk in stream])
        finally:
            await stream.aclose()
        response.stream = httpx.ByteStream(body)  # the client reads it as if from the wire
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
