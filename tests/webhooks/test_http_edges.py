"""The receiver's HTTP edges (issue #19 item 4), over raw sockets against uvicorn on loopback
configured exactly as ``calbridge serve`` configures it (``calbridge._asgi``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from calbridge._asgi import MAX_HEAD_BYTES, MAX_HEADERS, harden, http_protocol, uvicorn_options
from calbridge.store import read, schema
from calbridge.webhooks import MAX_BATCH_ITEMS
from tests.sync.support import Env, memory_env

SLOW = 0.5  # header and body-read deadlines of the server under test (serve uses 10 s)
WHOLE_BODY = 1.5  # the whole body's deadline of the server under test (serve uses 30 s)


def _inbox(env: Env) -> int:
    with read(env.runtime.engine) as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(schema.webhook_inbox)).scalar_one()
        )


@pytest.fixture
async def served(sqlite_url: str) -> AsyncIterator[tuple[Env, int]]:
    """The memory receiver under uvicorn on 127.0.0.1 (short deadlines)."""
    async with memory_env(sqlite_url) as env:
        options = {**uvicorn_options(), "http": http_protocol(header_timeout=SLOW)}
        config = uvicorn.Config(
            harden(env.app, body_timeout=SLOW, body_deadline=WHOLE_BODY),
            host="127.0.0.1",
            port=0,
            lifespan="off",
            access_log=False,
            log_level="warning",
            **options,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(1000):  # uvicorn exposes only a flag
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield env, port
        finally:
            server.should_exit = True
            await task


async def _exchange(port: int, *parts: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Send parts (then stall), read until the server closes; the answer and seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    received = bytearray()

    async def collect() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    reading = asyncio.create_task(collect())
    try:
        with contextlib.suppress(ConnectionError):  # the server may close while we send
            for part in parts:
                if reading.done():
                    break
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(pause)
        await asyncio.wait_for(reading, timeout=10)
    finally:
        writer.close()
    return bytes(received), time.monotonic() - began


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_slow_headers_are_cut_off(served: tuple[Env, int]) -> None:
    env, port = served
    answer, took = await _exchange(port, b"POST /memory HTTP/1.1\r\nHost: x\r\nX-A: 1")
    assert _status(answer) == 408
    assert took < SLOW + 2
    # a sender trickling header lines does not extend the deadline
    lines = [b"POST /memory HTTP/1.1\r\n"] + [b"X-%d: y\r\n" % i for i in range(20)]
    answer, took = await _exchange(port, *lines, pause=0.1)
    assert _status(answer) == 408
    assert took < SLOW + 2
    assert env.app.state.receiver.accepted == 0


async def test_partial_body_is_cut_off(served: tuple[Env, int]) -> None:
    env, port = served
    ch = env.push_channel()
    genuine = env.provider.notification_for(ch, seq=1)
    head = b"POST /memory HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(genuine.body)
    sent = dict(genuine.headers)
    head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in sent.items())
    answer, took = await _exchange(port, head + b"\r\n" + genuine.body[:5])
    assert _status(answer) == 408
    assert b"x-content-type-options: nosniff" in answer.lower()
    assert took < SLOW + 2
    assert _inbox(env) == 0


async def test_trickled_body_is_cut_off_at_the_whole_body_deadline(
    served: tuple[Env, int],
) -> None:
    """A byte every 0.2 s never trips the per-read deadline but cannot stretch the body
    past its total deadline."""
    env, port = served
    ch = env.push_channel()
    genuine = env.provider.notification_for(ch, seq=1)
    head = b"POST /memory HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(genuine.body)
    head += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in genuine.headers.items())
    trickle = [genuine.body[i : i + 1] for i in range(len(genuine.body))]
    assert len(trickle) * 0.2 > WHOLE_BODY + 2  # the whole body would take longer
    answer, took = await _exchange(port, head + b"\r\n", *trickle, pause=0.2)
    assert _status(answer) == 408
    assert WHOLE_BODY - 0.1 < took < WHOLE_BODY + 2
    assert _inbox(env) == 0
    # the same body sent at once is accepted (the deadline is per request)
    whole, _ = await _exchange(port, head + b"Connection: close\r\n\r\n" + genuine.body)
    assert _status(whole) in (200, 202, 204)
    assert _inbox(env) == 1


async def test_oversized_heads_are_refused_before_the_app(served: tuple[Env, int]) -> None:
    env, port = served
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS * 2))
    big = b"X-Big: " + b"a" * (64 * 1024) + b"\r\n"
    for extra in (many, big):
        answer, _ = await _exchange(
            port, b"POST /memory HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + extra + b"\r\n{}"
        )
        assert _status(answer) in (400, 431), answer[:80]
        assert _status(answer) == 431
    # a head a little under the limit is processed normally (and answered by the app)
    fine = b"X-Ok: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    answer, _ = await _exchange(
        port,
        b"POST /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
        + fine
        + b"\r\n{}",
    )
    assert _status(answer) == 404
    assert env.app.state.receiver.accepted == 0
    assert _inbox(env) == 0


async def test_security_headers_on_every_answer_and_no_host_redirect(
    served: tuple[Env, int],
) -> None:
    env, port = served
    ch = env.push_channel()
    genuine = env.provider.notification_for(ch, seq=1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answers = [
            await http.post("/memory", content=genuine.body, headers=dict(genuine.headers)),
            await http.post("/nope", content=b"{}"),
            await http.put("/memory", content=b"{}"),
            await http.get("/a/b/c"),
            await http.post("/memory/", content=b"{}", headers={"host": "evil.example"}),
        ]
    assert [a.status_code for a in answers] == [202, 404, 405, 404, 404]
    for a in answers:
        assert a.headers["x-content-type-options"] == "nosniff"
        assert a.headers["referrer-policy"] == "no-referrer"
        assert a.headers["x-frame-options"] == "DENY"
        assert a.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in a.headers["content-security-policy"]
        assert "location" not in a.headers


async def test_graph_batches_cannot_amplify_into_lookups(sqlite_url: str) -> None:
    async with memory_env(sqlite_url) as env:
        receiver = env.app.state.receiver
        before = receiver.store_lookups
        items = [{"subscriptionId": f"sub-{i}", "clientState": "x"} for i in range(5000)]
        too_many = await env.http.post("/memory", content=json.dumps({"value": items}))
        assert too_many.status_code == 413
        assert receiver.store_lookups == before  # refused before any lookup
        capped = json.dumps({"value": items[:MAX_BATCH_ITEMS]})
        answer = await env.http.post("/memory", content=capped)
        assert 400 <= answer.status_code < 500
        assert receiver.store_lookups == before + 1  # one batched query, not 1,000
        assert _inbox(env) == 0


async def test_store_locked_past_timeout_is_503_with_retry_after(sqlite_url: str) -> None:
    """A write lock held by another connection: 503 + Retry-After within the store timeout;
    the redelivery after the lock is released is processed once."""
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        req = env.provider.notification_for(ch, seq=9)
        env.app.state.receiver.store_timeout = 0.5
        path = sqlite_url.removeprefix("sqlite:///")
        holder = sqlite3.connect(path, timeout=0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            began = time.monotonic()
            locked = await env.post(req)
            took = time.monotonic() - began
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert locked.status_code == 503
        assert locked.headers["retry-after"].isdigit()
        assert took < 3
        env.app.state.receiver.store_timeout = 30
        again: Any = await env.post(req)
        assert again.status_code == 202
        await env.app.state.receiver.aclose()
        assert _inbox(env) == 1
