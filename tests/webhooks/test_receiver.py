"""The webhook receiver over the reference provider (W2, W3, W8, W10, W12 and the basics)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calbridge._runtime import Runtime
from calbridge.jobs import jobs as jobs_table
from calbridge.store import read, schema
from calbridge.testing import sign_memory_notification
from calbridge.webhooks import make_webhook_app
from tests.sync.support import Env, draft_event, memory_env


def _count(env: Env, table: sa.Table, *where: Any) -> int:
    with read(env.runtime.engine) as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()
        )


def _queued_syncs(env: Env) -> int:
    j = jobs_table.c
    return _count(env, jobs_table, j.kind == "sync", j.state == "queued")


def _inbox(env: Env) -> int:
    return _count(env, schema.webhook_inbox)


async def test_genuine_notification_is_stored_queued_and_acknowledged(migrated_url: str) -> None:
    async with memory_env(migrated_url) as env:
        ch = env.push_channel()
        env.backend.put(draft_event("work", "e1", "one"))
        response = await env.post(env.provider.notification_for(ch, seq=1))
        assert response.status_code == 202
        assert _inbox(env) == 1
        assert _queued_syncs(env) == 1
        (item,) = env.runtime.store.channels.inbox_pending()
        assert ch.secret is not None
        assert ch.secret.reveal() not in json.dumps(dict(item.payload))
        rec = env.runtime.store.channels.get_channel("memory", ch.id)
        assert rec is not None
        assert rec.last_notification_at is not None
        await env.drain()
        assert env.cache("work") == env.remote("work") == env.mirror.view("work") == {"e1": "one"}


async def test_forged_and_unknown_input_is_4xx_and_stores_nothing(migrated_url: str) -> None:
    """W2: tampered body, wrong secret, missing headers, unknown channel -> 4xx, no row, no job."""
    async with memory_env(migrated_url) as env:
        ch = env.push_channel()
        genuine = env.provider.notification_for(ch, seq=7)
        headers = dict(genuine.headers)
        tampered = genuine.body.replace(b"7", b"8")
        wrong_secret = sign_memory_notification("not-the-secret", genuine.body)
        cases: list[tuple[dict[str, str], bytes]] = [
            (headers, tampered),
            ({**headers, "x-memory-signature": wrong_secret}, genuine.body),
            ({"x-memory-channel": ch.id}, genuine.body),
            ({"x-memory-signature": headers["x-memory-signature"]}, genuine.body),
            ({**headers, "x-memory-channel": "chn_unknown"}, genuine.body),
            ({**headers, "x-memory-channel": "poll:" + str(env.account.id)}, genuine.body),
        ]
        for hdrs, body in cases:
            response = await env.http.post("/memory", content=body, headers=hdrs)
            assert 400 <= response.status_code < 500, (hdrs, response.status_code)
        assert _inbox(env) == 0
        assert _queued_syncs(env) == 0
        assert (await env.http.post("/nope", content=b"{}")).status_code == 404
        assert (await env.http.post("/mem", content=b"{}")).status_code == 404


async def test_malformed_and_oversized_bodies_are_4xx(sqlite_url: str) -> None:
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        assert ch.secret is not None
        body = b"not json"
        signed = {
            "x-memory-channel": ch.id,
            "x-memory-signature": sign_memory_notification(ch.secret.reveal(), body),
        }
        assert (await env.http.post("/memory", content=body, headers=signed)).status_code == 400
        big = b"x" * (2 * 1024 * 1024)
        assert (await env.http.post("/memory", content=big, headers=signed)).status_code == 413

        async def chunks() -> Any:
            for _ in range(40):
                yield b"y" * 65536

        response = await env.http.post("/memory", content=chunks(), headers=signed)
        assert response.status_code == 413
        assert _inbox(env) == 0


async def test_fuzzed_headers_never_5xx(sqlite_url: str) -> None:
    """W3: arbitrary signature / channel header values -> always 4xx, nothing stored."""
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        body = env.provider.notification_for(ch, seq=1).body
        statuses: list[int] = []

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            sig=st.one_of(
                st.sampled_from(["garbage", "v1,@@@", "v1,AAAA v2", "é€", "x" * 10_000, ""]),
                st.text(max_size=200),
            ),
            channel=st.one_of(st.just(ch.id), st.text(max_size=80)),
        )
        def fuzz(sig: str, channel: str) -> None:
            headers = {
                b"x-memory-signature": _header_bytes(sig),
                b"x-memory-channel": _header_bytes(channel),
            }
            response = asyncio.run_coroutine_threadsafe(
                env.http.post("/memory", content=body, headers=headers), loop
            ).result()
            statuses.append(response.status_code)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(fuzz)
        assert statuses
        assert all(400 <= s < 500 for s in statuses)
        assert _inbox(env) == 0


def _header_bytes(text: str) -> bytes:
    return text.encode("utf-8", "replace").translate(None, b"\r\n\x00")


async def test_duplicate_delivery_to_two_receivers_is_recorded_once(migrated_url: str) -> None:
    """W8: the same delivery sent concurrently to two receivers (own engines) -> both 2xx,
    one inbox row, one queued sync job."""
    async with memory_env(migrated_url) as env:
        ch = env.push_channel()
        other = Runtime.open(env.runtime.config, host=env.runtime.host, clock=env.clock)
        try:
            app2 = make_webhook_app(other)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app2), base_url="http://hooks.test"
            ) as http2:
                req = env.provider.notification_for(ch, seq=42)
                hdrs = dict(req.headers)
                answers = await asyncio.gather(
                    *(
                        client.post("/memory", content=req.body, headers=hdrs)
                        for client in (env.http, http2, env.http, http2)
                    )
                )
        finally:
            await app2.state.receiver.aclose()
            await other.aclose()
        assert [a.status_code for a in answers] == [202] * 4
        assert _inbox(env) == 1
        assert _queued_syncs(env) == 1


async def test_store_unavailable_is_503_then_redelivery_processed_once(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W10: a failing commit answers 503 (never 2xx); the redelivery is processed once."""
    async with memory_env(migrated_url) as env:
        ch = env.push_channel()
        env.backend.put(draft_event("work", "e1", "one"))
        req = env.provider.notification_for(ch, seq=3)

        def broken(fn: Any, **kwargs: Any) -> Any:
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))

        monkeypatch.setattr(env.runtime.queue, "transact", broken)
        assert (await env.post(req)).status_code == 503
        monkeypatch.undo()
        assert _inbox(env) == 0

        def lookup_down(*args: Any, **kwargs: Any) -> Any:
            raise sa.exc.OperationalError("SELECT", {}, Exception("unable to open database"))

        monkeypatch.setattr(env.runtime.store.channels, "get_channel", lookup_down)
        env.app.state.receiver.forget_channels()
        other = env.provider.notification_for(ch, seq=4)
        assert (await env.post(other)).status_code == 503
        monkeypatch.undo()

        assert (await env.post(req)).status_code == 202
        assert (await env.post(req)).status_code == 202
        assert _inbox(env) == 1
        await env.drain()
        assert env.mirror.view("work") == {"e1": "one"}
        assert len(env.mirror.batch_ids) == 1


async def test_storm_coalesces_into_at_most_two_sync_runs(migrated_url: str) -> None:
    """W12: 1,000 notifications for one calendar -> at most one queued sync, <= 2 runs."""
    async with memory_env(migrated_url) as env:
        ch = env.push_channel()
        rounds_before = env.service.engine.rounds
        for i in range(20):
            env.backend.put(draft_event("work", f"e{i}", f"v{i}"))
        requests = [env.provider.notification_for(ch, seq=100 + i) for i in range(1000)]
        for start in range(0, 1000, 100):
            answers = await asyncio.gather(*(env.post(r) for r in requests[start : start + 100]))
            assert {a.status_code for a in answers} == {202}
            assert _queued_syncs(env) <= 1
        assert _inbox(env) == 1000
        await env.drain()
        assert env.service.engine.rounds - rounds_before <= 2
        assert env.cache("work") == env.remote("work") == env.mirror.view("work")


async def test_no_provider_call_during_receive(sqlite_url: str) -> None:
    """W9: receiving never calls a provider (the provider's HTTP client is never used)."""
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        calls: list[httpx.Request] = []

        def refuse(request: httpx.Request) -> httpx.Response:
            calls.append(request)
            raise httpx.ConnectError("blackholed")

        env.provider.http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
        loop = asyncio.get_running_loop()
        started = loop.time()
        answers = await asyncio.gather(
            *(env.post(env.provider.notification_for(ch, seq=i)) for i in range(50))
        )
        assert loop.time() - started < 5
        assert {a.status_code for a in answers} == {202}
        assert calls == []
