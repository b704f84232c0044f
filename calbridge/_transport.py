"""The shared client's default transport: httpx's own, one pool per event loop.

httpx's :class:`httpx.AsyncHTTPTransport` (httpcore: HTTP/1.1 keep-alive, pooled) does
the work; this wrapper only keeps one of them per event loop. A pooled connection belongs
to the loop that opened it, and the sync wrapper, scripts and CLI commands may drive one
client from successive loops (``asyncio.run`` twice): used from another loop, the
transport opens a fresh pool there and lets the old loop's connections go.

calbridge once sent through aiohttp here (its C parser costs less CPU per request on
loopback). Under realistic conditions (HTTPS, 20 ms per request) that bought 0 to 6% on a
10,000-event read (docs/benchmarks.md, "Read path under realistic conditions"): not worth
a second HTTP stack, so httpx's transport is the only one.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx

__all__ = ["LoopLocalTransport"]


class LoopLocalTransport(httpx.AsyncBaseTransport):
    """:class:`httpx.AsyncHTTPTransport` with one pool per running event loop.

    ``verify`` and ``limits`` are the transport's (a CA bundle path becomes an SSL
    context trusting it).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        self._verify = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._limits = limits or httpx.Limits(keepalive_expiry=5.0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: httpx.AsyncHTTPTransport | None = None
        self._closed = False

    def _here(self) -> httpx.AsyncHTTPTransport:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._closed:
            raise RuntimeError("the transport has been closed")
        # a pool opened on another (finished) loop cannot serve this one: its sockets
        # belong to that loop, which closes them when it is closed
        self._loop = loop
        self._pool = httpx.AsyncHTTPTransport(verify=self._verify, limits=self._limits)
        return self._pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._here().handle_async_request(request)

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.aclose()
