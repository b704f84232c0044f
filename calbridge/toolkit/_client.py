"""The authorised client: bearer token, one refresh on a 401, retries, pacing, error mapping."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import attrs
import httpx

from .._accounts import Account
from .._http import IDEMPOTENT_METHODS, RetryPolicy, read_json, redact_url, send, signal_when_sent
from ..errors import CalbridgeError
from ..provider import Session

__all__ = [
    "AuthorizedClient",
    "ErrorMapper",
    "Limiter",
    "Params",
    "RetryRule",
    "describe",
    "encode_params",
]

#: query parameters: a mapping or a sequence of pairs (see :func:`encode_params`)
Params = Mapping[str, Any] | Sequence[tuple[str, Any]]
#: encoded query parameters, as httpx takes them
_Query = list[tuple[str, str | int | float | bool | None]]


class ErrorMapper(Protocol):
    """Maps a provider's failed answer (HTTP 400 and above) onto calbridge's error tree.

    A plugin writes one, usually a function in its ``_errors.py``, and gives it to
    :class:`AuthorizedClient`, which raises what it returns. ``what`` names the call
    for the message (``"events.list"``, or ``"GET https://host/path"`` by default); the
    message must carry no token, secret or query string.

    Example::

        def error_for(response: httpx.Response, *, what: str) -> ProviderError:
            if response.status_code == 404:
                return NotFound(f"{what}: not found", provider="example", status=404)
            return ProviderResponseError(what, provider="example", status=response.status_code)
    """

    def __call__(self, response: httpx.Response, /, *, what: str) -> CalbridgeError:
        """The error to raise for ``response``."""
        ...


class RetryRule(Protocol):
    """Answers that a provider asks to repeat beyond what :func:`calbridge.send` repeats.

    ``send`` already retries connection errors, timeouts, 429, 502, 503 and 504. A rule
    returns True for another answer worth sending again after a backoff (Google: a 403
    with a ``rateLimitExceeded`` reason, for any method; a 500, when ``idempotent``).
    """

    def __call__(self, response: httpx.Response, /, *, idempotent: bool) -> bool:
        """Whether to send the request again."""
        ...


class Limiter(Protocol):
    """A client-side pace taken before every request is sent (the rate-budget hook).

    :class:`calbridge.RateLimiter` is one. The application-wide budget shared through
    the store (:func:`calbridge.install_rate_budget`) needs no limiter: the shared client's
    transport takes its grants for every call marked with the client's provider name.
    """

    async def acquire(self) -> None:
        """Wait until one more request may go."""
        ...


def encode_params(params: Params | None) -> _Query | None:
    """Query parameters as text pairs, or None when there are none.

    ``None`` values are left out, booleans become ``true``/``false``, lists and tuples
    repeat their key, anything else is ``str()``-ed. Pairs keep their order.
    """
    if params is None:
        return None
    items = params.items() if isinstance(params, Mapping) else params
    out: _Query = []
    for key, value in items:
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        elif isinstance(value, list | tuple):
            out.extend((key, str(v)) for v in value)
        else:
            out.append((key, str(value)))
    return out or None


def describe(request: httpx.Request) -> str:
    """``"METHOD url"`` without the URL's query: what an error message may name."""
    return f"{request.method} {redact_url(request.url)}"


def _account_key(account: Account) -> str:
    return account.provider_account_id or account.id or account.app_user_id


@attrs.define(kw_only=True)
class AuthorizedClient:
    """One provider's calls on the shared client: authorised, retried, paced, mapped.

    Build one per provider instance, on the ``http`` client calbridge passes in::

        self.api = AuthorizedClient(http=http, provider=self.name, errors=error_for)
        data = await self.api.call_json(session, "GET", f"{base}/calendars", what="list")

    Every request goes through :func:`calbridge.send` under ``provider``: marked as the
    provider's call (:class:`calbridge.ProviderCall`), it gets the shared client's retries
    with ``policy``, ``Retry-After``, the circuit breaker and the shared rate budget, after
    each of ``limiters`` granted it. Authorised requests carry the session's access token as
    a bearer token; a 401 makes the session refresh its tokens exactly once (single-flight
    in core) and the request is sent again with the new token.

    Attributes:
        http: the shared client (``Provider.http``).
        provider: the provider's name: the breaker's, the budget's and the errors'.
        errors: maps failed answers of :meth:`call` and :meth:`call_json`.
        policy: how :func:`calbridge.send` retries (and ``retry_also`` backs off).
        limiters: client-side paces taken before each send (e.g. Cronofy's 50/s, 500/min).
        retry_also: answers to repeat beyond ``send``'s, up to ``policy.attempts`` sends.
        headers: headers every authorised request carries (a call's own win).
        account_concurrency: at most this many authorised requests at once per account
            (Outlook: 4 per mailbox); None for no limit.
        sleep, rng: injectable for tests (no real sleeping, no randomness).
    """

    http: httpx.AsyncClient
    provider: str
    errors: ErrorMapper
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    limiters: Sequence[Limiter] = ()
    retry_also: RetryRule | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    account_concurrency: int | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: Callable[[], float] = random.random
    _slots: dict[str, asyncio.Semaphore] = attrs.field(init=False, factory=dict, repr=False)

    async def send(
        self, request: httpx.Request, *, idempotent: bool | None = None
    ) -> httpx.Response:
        """Send ``request`` as built (no token added); return the final answer, any status.

        ``idempotent`` defaults to the method's nature (see :func:`calbridge.send`).
        """
        may_repeat = request.method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        sent = 0
        while True:
            for limiter in self.limiters:
                await limiter.acquire()
            response = await send(
                self.http,
                request,
                provider=self.provider,
                policy=self.policy,
                idempotent=may_repeat,
                sleep=self.sleep,
                rng=self.rng,
            )
            if self.retry_also is None:
                return response
            sent += 1
            if sent >= self.policy.attempts or not self.retry_also(response, idempotent=may_repeat):
                return response
            await self.sleep(self.policy.backoff(sent, self.rng))

    async def request(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> httpx.Response:
        """Send an authorised request, refreshing once on a 401; return any final answer.

        Args:
            params: query parameters (see :func:`encode_params`); None keeps the URL's
                own query untouched (follow a next-page link verbatim).
            json: the JSON body, if any.
            headers: this request's headers, over the client's ``headers``.
            idempotent: whether the request may be repeated (default: by method).
            sent: resolved once the request is on the wire (see
                :func:`calbridge.signal_when_sent`): paged reads prefetch with it.
        """
        tokens = await session.access_token()
        query = encode_params(params)
        base = {**self.headers, **headers} if headers else self.headers
        extensions = {"trace": signal_when_sent(sent)} if sent is not None else None
        slot = None
        if self.account_concurrency is not None:
            key = _account_key(session.account)
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = asyncio.Semaphore(self.account_concurrency)
            await slot.acquire()
        try:
            refreshed = False
            while True:
                request = self.http.build_request(
                    method,
                    url,
                    params=query,
                    json=json,
                    headers={**base, "Authorization": f"Bearer {tokens.access_token.reveal()}"},
                    extensions=extensions,
                )
                response = await self.send(request, idempotent=idempotent)
                if response.status_code != 401 or refreshed:
                    return response
                refreshed = True
                tokens = await session.refresh(tokens)
        finally:
            if slot is not None:
                slot.release()

    async def call(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        what: str | None = None,
        accept: Collection[int] = (),
        errors: ErrorMapper | None = None,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> httpx.Response:
        """:meth:`request`, raising the mapped error for an answer of 400 or more.

        Args:
            what: names the call in error messages (default ``"METHOD url"``).
            accept: statuses of 400 and more returned rather than raised (a 404 on a
                delete: already gone).
            errors: maps this call's failures instead of the client's ``errors``.

        The other arguments are :meth:`request`'s.
        """
        response = await self.request(
            session, method, url, params=params, json=json, headers=headers,
            idempotent=idempotent, sent=sent,
        )  # fmt: skip
        status = response.status_code
        if status >= 400 and status not in accept:
            mapper = self.errors if errors is None else errors
            raise mapper(response, what=what or describe(response.request))
        return response

    async def call_json(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        what: str | None = None,
        accept: Collection[int] = (),
        errors: ErrorMapper | None = None,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> Any:
        """:meth:`call`, then the answer's JSON: None for a 204 or an empty body.

        An answer that is not JSON raises :class:`~calbridge.errors.ProviderResponseError`.
        """
        response = await self.call(
            session, method, url, what=what, accept=accept, errors=errors, params=params,
            json=json, headers=headers, idempotent=idempotent, sent=sent,
        )  # fmt: skip
        if response.status_code == 204 or not response.content:
            return None
        return read_json(response, provider=self.provider, what=what or describe(response.request))
