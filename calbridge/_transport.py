"""An httpx transport that sends HTTP/1.1 through aiohttp: the shared client's default.

Why: on the read hot path (a Cronofy page of 100 events is about 94 KB) httpx's own
transport (httpcore + h11 + anyio, all pure Python) costs about 2.5 ms of CPU per request
on a small machine; aiohttp's connection pool, with its C HTTP parser and an asyncio
protocol that fills one buffer, costs about 0.3 ms for the same request. Providers keep
speaking httpx (requests, responses, ``MockTransport`` and ``ASGITransport`` in tests);
only the bytes on the wire go through aiohttp.

What it keeps of httpx's transport contract:

- timeouts from the request's ``timeout`` extension (connect, read, pool);
- errors as httpx's exception tree, and carefully: only a failure to *connect* becomes
  :class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout` (which
  :func:`calbridge.send` retries even for a POST, since the request never left); a
  connection lost after sending becomes :class:`httpx.ReadError` or
  :class:`httpx.RemoteProtocolError` (retried only when the request is idempotent).
  Messages carry no URL, header or body (they could hold a code or a token);
- the ``trace`` extension's ``http11.send_request_headers.complete`` and
  ``http11.send_request_body.complete`` events, so a caller can tell when its request is
  on the wire (the Cronofy plugin's page prefetch waits for it);
- bytes as sent: no cookies, no redirects, no automatic headers beyond httpx's, the
  body undecoded (httpx decodes ``Content-Encoding`` as usual), the URL not requoted.

A body whose ``Content-Length`` is at most ``read_whole`` bytes (1 MiB by default: every
JSON page calbridge reads) is read in one call before the response is returned, which is
cheapest; a longer one, or one of unknown length (chunked), is streamed: ``client.stream()``
gets it chunk by chunk and memory stays O(chunk). One aiohttp session serves one event loop:
used from another loop, the transport opens a new one.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport"]

Trace = Callable[[str, Mapping[str, Any]], Awaitable[None]]

_HEADERS_SENT = "http11.send_request_headers.complete"
_BODY_SENT = "http11.send_request_body.complete"
#: headers aiohttp would add on its own; httpx has already set what the request needs
_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over aiohttp's pooled connections, as an :class:`httpx.AsyncBaseTransport`.

    ``verify`` is httpx's (True: the system's trust store via certifi; a path or an
    :class:`ssl.SSLContext`: a private CA; False: no checks). ``max_connections`` bounds
    the pool; idle connections close after ``keepalive_expiry`` seconds. Bodies of known
    length up to ``read_whole`` bytes are read at once, others streamed.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
        read_whole: int = 1 << 20,
    ) -> None:
        self._read_whole = read_whole
        self._ssl = _ssl_context(verify)
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._tracing = aiohttp.TraceConfig()
        self._tracing.on_request_headers_sent.append(_on_headers_sent)
        self._tracing.on_request_chunk_sent.append(_on_chunk_sent)

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    def _session_here(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and self._loop is loop and not session.closed:
            return session
        if self._closed:
            raise RuntimeError("the transport has been closed")
        if session is not None and not session.closed:
            session.detach()  # opened on another loop: its connections cannot serve this one
        self._session = session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_expiry,
                ssl=self._ssl,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            requote_redirect_url=False,
            trust_env=False,  # httpx mounts its own transports for environment proxies
            timeout=aiohttp.ClientTimeout(total=None),
            trace_configs=[self._tracing],
        )
        self._loop = loop
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_here()
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout", {})
        trace: Trace | None = request.extensions.get("trace")
        headers = [
            (k, v) for k, v in request.headers.multi_items() if k.lower() != "transfer-encoding"
        ]
        data: bytes | AsyncIterator[bytes] | None
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streaming body: aiohttp sends it chunked
            data = _body_chunks(request)
        context = SimpleNamespace(trace=trace, body=data is not None, pending=[])
        try:
            answer = await session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
                trace_request_ctx=context if trace is not None else None,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _as_httpx(exc, request) from None
        stream: httpx.AsyncByteStream
        length = answer.content_length
        if length is not None and length <= self._read_whole:
            try:
                stream = httpx.ByteStream(await answer.read())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise _as_httpx(exc, request) from None
            finally:
                answer.release()
        else:
            stream = _Streamed(answer, request)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode("latin-1", "replace")
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            stream=stream,
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - httpx closes from a coroutine
            running = None
        if running is self._loop:
            await session.close()
        else:
            session.detach()


class _Streamed(httpx.AsyncByteStream):
    """A body read as it arrives; closing it gives the connection back (or drops it when
    the body was not read to the end)."""

    def __init__(self, answer: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._answer = answer
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_any():
                yield chunk
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _as_httpx(exc, self._request) from None

    async def aclose(self) -> None:
        self._answer.release()


def _ssl_context(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext | bool:
    if verify is False or isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str):  # a CA bundle file, or a directory of CA certificates
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context()  # certifi's bundle, or SSL_CERT_FILE / SSL_CERT_DIR


async def _body_chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    async for chunk in stream:
        yield chunk


def _context(ctx: SimpleNamespace) -> SimpleNamespace | None:
    found = getattr(ctx, "trace_request_ctx", None)
    return found if isinstance(found, SimpleNamespace) else None


async def _on_headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    request = _context(ctx)
    if request is None:
        return
    await request.trace(_HEADERS_SENT, {})
    if not request.body:
        await request.trace(_BODY_SENT, {})


async def _on_chunk_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: object
) -> None:
    request = _context(ctx)
    if request is not None and request.body:
        request.body = False  # bytes bodies go out in one write: report once
        await request.trace(_BODY_SENT, {})


def _as_httpx(exc: Exception, request: httpx.Request) -> Exception:
    """httpx's exception for an aiohttp failure (a message with no URL, header or body)."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"timed out connecting ({kind})", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        return httpx.ConnectError(f"could not connect to {where} ({kind})", request=request)
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(f"timed out waiting for the answer ({kind})", request=request)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx.UnsupportedProtocol(f"cannot send to this URL ({kind})", request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(f"malformed answer ({kind})", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(
            f"the server closed the connection without a full answer ({kind})", request=request
        )
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(f"the connection failed ({kind})", request=request)
    return exc
