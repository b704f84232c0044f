"""Authorised Google API calls: bearer token, one refresh on 401, Google-specific retries.

:func:`calbridge.send` already retries connection errors, timeouts, 429, 502, 503 and 504.
On top of it this layer retries, with the same full-jitter backoff:

* 403 with a ``usageLimits`` reason (``rateLimitExceeded``, ``userRateLimitExceeded``,
  ``quotaExceeded``): Google refused the call before doing anything, so any method may
  be repeated;
* 500 (``backendError``) for requests that may be repeated.

A 401 makes the session refresh its tokens once (single-flight in core), then the call is
sent again with the new access token.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import httpx

import calbridge
from calbridge import RetryPolicy, Session

from ._errors import is_rate_limited

__all__ = ["GoogleHttp"]

PROVIDER = "google"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


@attrs.define
class GoogleHttp:
    """Sends requests for one provider instance (shared ``httpx.AsyncClient``)."""

    client: httpx.AsyncClient
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: injectable for tests (no real sleeping)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: Callable[[], float] = random.random

    async def send(
        self, request: httpx.Request, *, idempotent: bool | None = None
    ) -> httpx.Response:
        """Send one unauthenticated request (OAuth endpoints) with Google's retry rules."""
        may_repeat = request.method in _IDEMPOTENT if idempotent is None else idempotent
        attempt = 0
        while True:
            response = await calbridge.send(
                self.client,
                request,
                provider=PROVIDER,
                policy=self.policy,
                idempotent=may_repeat,
                sleep=self.sleep,
                rng=self.rng,
            )
            retry = (response.status_code == 403 and is_rate_limited(response)) or (
                response.status_code == 500 and may_repeat
            )
            attempt += 1
            if not retry or attempt >= self.policy.attempts:
                return response
            await self.sleep(self.policy.backoff(attempt, self.rng))

    async def call(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> httpx.Response:
        """Send an authorised request; refresh once on 401. Returns any final response.

        ``sent`` is resolved once the request is on the wire (see
        :func:`calbridge.signal_when_sent`): page reads prefetch with it.
        """
        tokens = await session.access_token()
        extensions = {"trace": calbridge.signal_when_sent(sent)} if sent is not None else None
        refreshed = False
        while True:
            request = self.client.build_request(
                method,
                url,
                params=_query(params),
                json=json,
                headers={
                    **(headers or {}),
                    "Authorization": f"Bearer {tokens.access_token.reveal()}",
                },
                extensions=extensions,
            )
            response = await self.send(request, idempotent=idempotent)
            if response.status_code == 401 and not refreshed:
                refreshed = True
                tokens = await session.refresh(tokens)
                continue
            return response


_Query = list[tuple[str, str | int | float | bool | None]]


def _query(params: Mapping[str, Any] | None) -> _Query | None:
    if params is None:
        return None
    out: _Query = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((key, "true" if value else "false"))
        elif isinstance(value, list | tuple):
            out.extend((key, str(v)) for v in value)
        else:
            out.append((key, str(value)))
    return out
