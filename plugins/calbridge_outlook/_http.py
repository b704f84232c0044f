"""Authorised Graph calls: bearer token, ``Prefer`` headers, per-mailbox concurrency, retries.

* Every call sends ``Prefer: outlook.timezone="UTC"`` and ``Prefer: IdType="ImmutableId"``
  (ids stay stable when an event moves between folders).
* Outlook allows 4 concurrent requests per mailbox per application; more are refused
  with 429 ``ApplicationThrottled``. A semaphore per mailbox keeps calbridge under it.
* :func:`calbridge.send` retries 429 (any method) and 503 (repeatable requests), sleeping
  the ``Retry-After`` Graph sends (fractional seconds too, e.g. ``2.128``).
* A 401 makes the session refresh its tokens once, then the call is sent again.
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

__all__ = ["MAILBOX_CONCURRENCY", "PREFER", "GraphHttp"]

PROVIDER = "outlook"
#: Outlook's concurrent-request limit per mailbox and application
MAILBOX_CONCURRENCY = 4
#: the preferences sent on every call
PREFER = ('outlook.timezone="UTC"', 'IdType="ImmutableId"')


@attrs.define
class GraphHttp:
    """Sends requests for one provider instance (shared ``httpx.AsyncClient``)."""

    client: httpx.AsyncClient
    policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    concurrency: int = MAILBOX_CONCURRENCY
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: Callable[[], float] = random.random
    _mailboxes: dict[str, asyncio.Semaphore] = attrs.field(init=False, factory=dict)

    def mailbox(self, key: str) -> asyncio.Semaphore:
        """The concurrency limiter of one mailbox."""
        sem = self._mailboxes.get(key)
        if sem is None:
            sem = self._mailboxes[key] = asyncio.Semaphore(self.concurrency)
        return sem

    async def send(
        self, request: httpx.Request, *, idempotent: bool | None = None
    ) -> httpx.Response:
        """Send one request (no authorisation added) with calbridge's retry rules."""
        return await calbridge.send(
            self.client,
            request,
            provider=PROVIDER,
            policy=self.policy,
            idempotent=idempotent,
            sleep=self.sleep,
            rng=self.rng,
        )

    async def call(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        prefer: tuple[str, ...] = (),
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> httpx.Response:
        """Send an authorised request; refresh once on 401. Returns any final response.

        ``sent`` is resolved once the request is on the wire (see
        :func:`calbridge.signal_when_sent`): page reads prefetch with it.
        """
        extensions = {"trace": calbridge.signal_when_sent(sent)} if sent is not None else None
        account = session.account
        key = account.provider_account_id or account.id or account.app_user_id
        tokens = await session.access_token()
        refreshed = False
        async with self.mailbox(key):
            while True:
                request = self.client.build_request(
                    method,
                    url,
                    params={k: str(v) for k, v in (params or {}).items() if v is not None} or None,
                    json=json,
                    headers={
                        **(headers or {}),
                        "Authorization": f"Bearer {tokens.access_token.reveal()}",
                        "Prefer": ", ".join((*PREFER, *prefer)),
                    },
                    extensions=extensions,
                )
                response = await self.send(request, idempotent=idempotent)
                if response.status_code == 401 and not refreshed:
                    refreshed = True
                    tokens = await session.refresh(tokens)
                    continue
                return response
