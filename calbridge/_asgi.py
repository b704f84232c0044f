"""Hardening shared by calbridge's HTTP edges (the webhook receiver, the OAuth callback).

* :class:`SecureApp`: a Starlette app whose every answer (404, 405, redirects, 500s
  included) carries :data:`SECURITY_HEADERS`, whose request bodies must arrive within
  :data:`BODY_TIMEOUT` seconds per read and :data:`BODY_DEADLINE` seconds in all (a
  stalled or trickling sender gets 408 and the connection is closed), and which never
  redirects a trailing slash (Starlette builds that redirect from the ``Host`` header).
* :func:`harden`: the same for an app built elsewhere (``calbridge serve``'s mount).
  Both take another ``Content-Security-Policy`` for an app that serves its own pages
  (the operator console: ``csp=``); the default, :data:`API_CSP`, allows nothing.
* :func:`http_protocol`: uvicorn's httptools protocol with a header read deadline
  (:data:`HEADER_TIMEOUT`) and bounded request heads (:data:`MAX_HEADERS` header lines,
  :data:`MAX_HEAD_BYTES` bytes): a slow or oversized head is answered 408 / 431 and the
  connection closed before any application code runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from starlette.applications import Starlette

__all__ = [
    "API_CSP",
    "BODY_DEADLINE",
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "SECURITY_HEADERS",
    "SecureApp",
    "harden",
    "http_protocol",
    "uvicorn_options",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: the Content-Security-Policy of the API edges: nothing may load, nothing may frame them
API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
#: sent on every response (set only where the app did not set the header itself)
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", API_CSP.encode()),
)


def _headers(csp: str) -> tuple[tuple[bytes, bytes], ...]:
    """:data:`SECURITY_HEADERS` with ``csp`` as the Content-Security-Policy."""
    if csp == API_CSP:
        return SECURITY_HEADERS
    return tuple(
        (k, csp.encode() if k == b"content-security-policy" else v) for k, v in SECURITY_HEADERS
    )


#: seconds one read of the request body may take before the request is answered 408
BODY_TIMEOUT: Final = 10.0
#: seconds the whole body may take from the end of the head (a sender trickling a byte
#: every few seconds cannot hold a connection and a worker of the app for long)
BODY_DEADLINE: Final = 30.0
#: seconds from the first byte of a request (or the connection) to the end of its head
HEADER_TIMEOUT: Final = 10.0
#: header lines in one request head
MAX_HEADERS: Final = 100
#: bytes of one request head (request line and headers)
MAX_HEAD_BYTES: Final = 16 * 1024


class _Security:
    """Pure ASGI: security headers on every response, deadlines on reading the body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_timeout: float = BODY_TIMEOUT,
        body_deadline: float = BODY_DEADLINE,
        csp: str = API_CSP,
    ) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.body_deadline = body_deadline
        self.headers = _headers(csp)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timed_out = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_deadline

        async def timed_receive() -> Message:
            nonlocal timed_out
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + self.body_timeout)):
                    return await receive()
            except TimeoutError:
                timed_out = True  # the app sees a disconnect; the client gets 408
                return {"type": "http.disconnect"}

        async def secure_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in self.headers if k not in present]
                status = message["status"]
                if timed_out:
                    status = 408
                    headers = [(k, v) for k, v in headers if k.lower() != b"connection"]
                    headers.append((b"connection", b"close"))
                message = {**message, "status": status, "headers": headers}
            await send(message)

        await self.app(scope, timed_receive, secure_send)


class SecureApp(Starlette):
    """A Starlette app with the hardening of this module and no trailing-slash redirect."""

    body_timeout: float = BODY_TIMEOUT
    body_deadline: float = BODY_DEADLINE
    #: the Content-Security-Policy of every answer (an app serving pages sets its own)
    csp: str = API_CSP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> Any:
        return _Security(
            super().build_middleware_stack(),
            body_timeout=self.body_timeout,
            body_deadline=self.body_deadline,
            csp=self.csp,
        )


def harden(
    app: Any,
    *,
    body_timeout: float = BODY_TIMEOUT,
    body_deadline: float = BODY_DEADLINE,
    csp: str = API_CSP,
) -> Any:
    """Wrap any ASGI app (a Starlette app also loses its trailing-slash redirect).

    ``csp``: the Content-Security-Policy sent where the app set none (default
    :data:`API_CSP`, which lets nothing load).
    """
    router = getattr(app, "router", None)
    if router is not None and hasattr(router, "redirect_slashes"):
        router.redirect_slashes = False
    return _Security(app, body_timeout=body_timeout, body_deadline=body_deadline, csp=csp)


class _HeadRejected(Exception):
    """Raised from a parser callback; the protocol answers 431 (see send_400_response)."""


_REASONS: Final = {
    b"408": b"Request Timeout",
    b"431": b"Request Header Fields Too Large",
}


def uvicorn_options() -> dict[str, Any]:
    """The ``uvicorn.Config`` keywords ``calbridge serve`` runs with (tests use them too)."""
    return {
        "http": http_protocol(),
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,  # if h11 is ever chosen instead
        "timeout_keep_alive": 5,
    }


def http_protocol(
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_headers: int = MAX_HEADERS,
    max_head_bytes: int = MAX_HEAD_BYTES,
) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with a header deadline and bounded heads."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Protocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None
        _in_head = True
        _head_bytes = 0  # raw bytes received while the head is incomplete
        _head_size = 0  # request target and header bytes parsed so far
        _head_lines = 0
        _rejected: bytes | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _start_head(self) -> None:
            self._reset_head()
            self._stop_timer()
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _stop_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self._refuse(b"408")

        def _refuse(self, status: bytes) -> None:
            self._stop_timer()
            body = _REASONS[status].lower() + b"\n"
            head = [b"HTTP/1.1 ", status, b" ", _REASONS[status], b"\r\n"]
            for name, value in SECURITY_HEADERS:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(head))
            self.transport.close()

        def send_400_response(self, msg: str) -> None:
            # httptools reports an exception raised in a callback as a parse error
            if self._rejected is not None:
                self._refuse(self._rejected)
            else:
                super().send_400_response(msg)

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self._in_head and self._head_timer is None:
                self._start_head()  # the first bytes of a keep-alive connection's next request
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_head_bytes:
                    self._refuse(b"431")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            if self._head_size > max_head_bytes:
                self._rejected = b"431"
                raise _HeadRejected
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_lines += 1
            self._head_size += len(name) + len(value) + 4
            if self._head_lines > max_headers or self._head_size > max_head_bytes:
                self._rejected = b"431"
                raise _HeadRejected
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._reset_head()

        def _reset_head(self) -> None:
            self._in_head = True
            self._head_bytes = self._head_size = self._head_lines = 0

    return Protocol
