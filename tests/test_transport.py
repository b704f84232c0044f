"""The shared client's default transport (httpx's own, one pool per event loop) against
real servers on loopback.

The servers here are raw asyncio socket servers, so each test controls the bytes: what a
request looked like on the wire, and how an answer misbehaves.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import socket
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import calbridge
import calbridge.sandbox
from calbridge._resilience import ResilientTransport
from calbridge._transport import LoopLocalTransport
from calbridge.errors import Unavailable

Reply = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and Content-Length body) as bytes, or None at end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


@asynccontextmanager
async def serving(
    reply: Reply, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A loopback server answering each request with ``reply``; yields (base URL, the
    requests it read, one entry per connection accepted)."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while (request := await _read_request(reader)) is not None:
                seen.append(request)
                await reply(request, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", seen, connections
    finally:
        server.close()


def answer(
    status: int = 200, body: bytes = b"{}", headers: tuple[tuple[str, str], ...] = ()
) -> Reply:
    async def reply(_request: bytes, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status} Whatever", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return reply


def client(**kwargs: Any) -> httpx.AsyncClient:
    made = calbridge.make_http_client(**kwargs)
    wrapper = made._transport  # provider calls are made resilient around the default
    assert isinstance(wrapper, ResilientTransport)
    assert isinstance(wrapper.inner, LoopLocalTransport)
    return made


async def test_request_goes_out_as_httpx_built_it() -> None:
    async with serving(answer(body=b'{"ok": true}')) as (base, seen, _), client() as http:
        response = await http.post(
            f"{base}/v1/events?calendar_ids%5B%5D=cal_1&x=a%2Fb",
            json={"summary": "Lunch"},
            headers={"Authorization": "Bearer tok"},
        )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.reason_phrase == "Whatever"
    assert response.http_version == "HTTP/1.1"
    head, _, body = seen[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    # the URL is sent exactly as httpx encoded it (not requoted)
    assert lines[0] == b"POST /v1/events?calendar_ids%5B%5D=cal_1&x=a%2Fb HTTP/1.1"
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert len(names) == len(set(names)), names  # no header twice
    assert b"cookie" not in names
    headers = {line.split(b":")[0].lower(): line.split(b":", 1)[1].strip() for line in lines[1:]}
    assert headers[b"user-agent"].startswith(b"calbridge/")
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"authorization"] == b"Bearer tok"
    assert body == b'{"summary":"Lunch"}'


async def test_keeps_one_connection_alive_across_requests() -> None:
    async with serving(answer()) as (base, seen, connections), client() as http:
        for _ in range(5):
            (await http.get(f"{base}/x")).raise_for_status()
    assert len(seen) == 5
    assert len(connections) == 1


async def test_compressed_and_chunked_answers_are_decoded_by_httpx() -> None:
    payload = b'{"events": []}' * 100

    async def reply(_request: bytes, writer: asyncio.StreamWriter) -> None:
        packed = gzip.compress(payload)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(packed), 100):
            part = packed[i : i + 100]
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serving(reply) as (base, _, _), client() as http:
        response = await http.get(f"{base}/x")
    assert response.content == payload
    assert response.headers["content-encoding"] == "gzip"
    assert "content-length" not in response.headers  # the answer's headers, as sent


async def test_redirects_and_cookies_are_left_alone() -> None:
    headers = (("Location", "/elsewhere"), ("Set-Cookie", "affinity=user-a; Path=/"))
    async with serving(answer(302, b"", headers)) as (base, seen, _), client() as http:
        first = await http.get(f"{base}/a")
        await http.get(f"{base}/b")
    assert first.status_code == 302
    assert len(seen) == 2  # the redirect was not followed
    assert b"cookie:" not in seen[1].lower()  # one user's cookie rides on no other request


async def test_trace_reports_the_request_on_the_wire_before_the_answer() -> None:
    events: list[str] = []

    async def trace(event: str, _info: Any) -> None:
        events.append(event)

    async def reply(request: bytes, writer: asyncio.StreamWriter) -> None:
        events.append("server read the request")
        await answer()(request, writer)

    async with serving(reply) as (base, _, _), client() as http:
        await http.get(f"{base}/x", extensions={"trace": trace})
        await http.post(f"{base}/y", content=b"body", extensions={"trace": trace})
    on_wire = {"http11.send_request_headers.complete", "http11.send_request_body.complete"}
    assert [e for e in events if e in on_wire or e == "server read the request"] == [
        "http11.send_request_headers.complete",
        "http11.send_request_body.complete",
        "server read the request",
    ] * 2


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://127.0.0.1:{port}/v1/x?code=SECRETCODE")
    assert "SECRETCODE" not in str(caught.value)


async def test_a_dropped_post_is_not_retried_as_if_it_never_left() -> None:
    """The server read the POST, then closed the connection with no answer: that is not
    a connect error (which calbridge.send retries even for a POST)."""

    async def drop(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with serving(drop) as (base, seen, _), client() as http:
        request = http.build_request(
            "POST",
            f"{base}/v1/events?code=SECRETCODE",
            json={"summary": "x"},
            headers={"Authorization": "Bearer SECRETTOKEN"},
        )
        with pytest.raises(httpx.TransportError) as caught:
            await http.send(request)
        assert not isinstance(caught.value, (httpx.ConnectError, httpx.ConnectTimeout))
        assert isinstance(caught.value, (httpx.NetworkError, httpx.RemoteProtocolError))
        assert "SECRET" not in _chain_text(caught.value)

        with pytest.raises(Unavailable):
            await calbridge.send(http, request, provider="test", sleep=_no_sleep)
    assert len(seen) == 2  # once directly, once through send: no retry


def _chain_text(exc: BaseException | None) -> str:
    """The messages of an exception and of everything it was raised from."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def replies_then_closes(data: bytes) -> Reply:
    """A server that writes ``data`` whatever the request, then closes the connection."""

    async def handle(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("reply", "errors"),
    [
        (
            b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"half',
            (httpx.ReadError, httpx.RemoteProtocolError),
        ),
        (b"this is not HTTP at all\r\n\r\n", httpx.RemoteProtocolError),
    ],
    ids=["truncated", "garbage"],
)
async def test_a_broken_answer_is_a_transport_error(
    reply: bytes, errors: type[Exception] | tuple[type[Exception], ...]
) -> None:
    async with serving(replies_then_closes(reply)) as (base, _, _), client() as http:
        with pytest.raises(errors):
            await http.get(f"{base}/x")


async def test_a_slow_answer_is_a_read_timeout() -> None:
    async def slow(request: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(1.0)
        await answer()(request, writer)

    async with serving(slow) as (base, _, _), client(timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{base}/x")


def test_one_client_serves_successive_event_loops() -> None:
    """The sync wrapper and scripts may drive one client from more than one loop."""

    async def one(http: httpx.AsyncClient) -> int:
        async with serving(answer(body=b"[1]")) as (base, _, _):
            return len((await http.get(f"{base}/x")).json())

    http = calbridge.make_http_client()
    assert asyncio.run(one(http)) == 1
    assert asyncio.run(one(http)) == 1
    asyncio.run(http.aclose())


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    files = calbridge.sandbox.make_tls_files(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(files.cert, files.key)
    async with serving(answer(body=b'{"secure": true}'), tls=tls) as (base, _, _):
        async with client(verify=str(files.ca)) as http:
            assert (await http.get(f"{base}/x")).json() == {"secure": True}
        async with client() as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(f"{base}/x")


async def test_closed_transport_refuses_new_requests() -> None:
    async with serving(answer()) as (base, _, _):
        http = client()
        await http.get(f"{base}/x")
        await http.aclose()
        with pytest.raises(RuntimeError):
            await http.get(f"{base}/x")


async def _no_sleep(_seconds: float) -> None:
    return None


BIG = 3 * (1 << 20)  # above the 1 MiB read-whole limit


async def test_a_long_body_streams_as_it_arrives() -> None:
    """Past 1 MiB the body is handed over chunk by chunk: the client holds its first bytes
    while the server still waits to send the rest."""
    first_seen = asyncio.Event()

    async def in_two_halves(_request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode())
        writer.write(b"a" * (BIG // 2))
        await writer.drain()
        await first_seen.wait()  # a client reading the body whole would wait forever
        writer.write(b"b" * (BIG // 2))
        await writer.drain()

    async def read() -> tuple[int, int]:
        chunks = total = 0
        async with client() as http, http.stream("GET", f"{base}/big") as response:
            async for chunk in response.aiter_raw():
                chunks += 1
                total += len(chunk)
                first_seen.set()
        return chunks, total

    async with serving(in_two_halves) as (base, _, _):
        chunks, total = await asyncio.wait_for(read(), timeout=10)
    assert total == BIG
    assert chunks > 1


async def test_a_stream_closed_early_does_not_poison_the_pool() -> None:
    """Leaving a streamed body unread drops that connection; the next request gets a fresh
    one and a whole answer."""
    async with serving(answer(body=b"x" * BIG)) as (base, seen, connections), client() as http:
        async with http.stream("GET", f"{base}/big") as response:
            async for _chunk in response.aiter_raw():
                break
        again = await http.get(f"{base}/big")
    assert len(again.content) == BIG
    assert len(seen) == 2
    assert len(connections) == 2


async def test_a_stream_cut_short_is_a_transport_error() -> None:
    cut = replies_then_closes(
        f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode() + b"a" * (BIG // 3)
    )
    async with serving(cut) as (base, _, _), client() as http:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as caught:
            await http.get(f"{base}/big?code=SECRETCODE")
    assert "SECRET" not in _chain_text(caught.value)


async def test_a_sent_answer_is_freed_as_soon_as_it_is_dropped() -> None:
    """Through calbridge.send over loopback, a read answer is no reference cycle: its body
    goes when the caller lets go (garbage collector off), and it keeps what it had."""
    body = b'{"events": []}' * 5000
    async with serving(answer(body=body)) as (base, _, _), client() as http:
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                response = await calbridge.send(http, http.build_request("GET", base), provider="p")
                assert response.content == body
                assert response.elapsed.total_seconds() > 0
                assert response.is_closed
                ref = weakref.ref(response)
                del response
                assert ref() is None
        finally:
            gc.enable()
