"""The circuit breaker shared through the store: what one process learns of a provider's
outage holds for every process on the same SQLite file or PostgreSQL database.

Processes are real subprocesses (``python -c``) driven line by line over stdin, calling a
real server on loopback that counts the requests it gets; the PostgreSQL half runs under
``scripts/with-postgres.sh``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import calbridge
from calbridge import errors
from calbridge._breaker import CircuitBreaker, SharedCircuit, share_circuit_breaker
from calbridge.sandbox import serve_in_thread
from calbridge.store import create_engine
from calbridge.store.testing import db_url, fresh_postgres_url

__all__ = ["db_url", "fresh_postgres_url"]

ROOT = Path(__file__).resolve().parent.parent

THRESHOLD = 5
COOLDOWN = 2.0
REFRESH = 0.3


class Upstream:
    """A server answering ``status`` after ``delay`` seconds, counting requests."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        self._lock = threading.Lock()

    async def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response("{}", status_code=self.status, media_type="application/json")


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    up = Upstream()
    app = Starlette(routes=[Route("/x", up.handle, methods=["GET"])])
    with serve_in_thread(app) as server:
        yield up, server.base_url


@pytest.fixture
def url(db_url: str) -> str:
    create_engine(db_url, upgrade=True).dispose()
    return db_url


# -- the worker process ------------------------------------------------------------------


async def run_worker(spec: dict[str, Any]) -> None:
    """Read ``{"n": calls, "concurrency": c}`` lines from stdin; answer each with a line
    listing the calls' outcomes: the status, ``open:<retry_after>`` or ``probing``."""
    engine = create_engine(spec["url"], upgrade=False)
    policy = calbridge.BreakerPolicy(
        threshold=spec["threshold"], cooldown=spec["cooldown"], refresh=spec["refresh"]
    )
    client = calbridge.make_http_client(breaker=policy)
    share_circuit_breaker(client, engine, provider="acme", app="app-1")
    retry = calbridge.RetryPolicy(attempts=1)

    async def call() -> str:
        request = client.build_request("GET", f"{spec['base']}/x")
        try:
            response = await calbridge.send(client, request, provider="acme", policy=retry)
        except errors.Unavailable as exc:
            if "half-open" in str(exc):
                return "probing"
            return f"open:{exc.retry_after}"
        return str(response.status_code)

    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line.strip():
                break
            command = json.loads(line)
            out: list[str] = []
            for start in range(0, command["n"], command["concurrency"]):
                size = min(command["concurrency"], command["n"] - start)
                out += await asyncio.gather(*(call() for _ in range(size)))
            print(json.dumps(out), flush=True)
    finally:
        await client.aclose()
        engine.dispose()


_WORKER = (
    "import asyncio, json, sys\n"
    "from tests.test_breaker_shared import run_worker\n"
    "asyncio.run(run_worker(json.loads(sys.argv[1])))\n"
)


class Worker:
    def __init__(self, url: str, base: str) -> None:
        spec = {
            "url": url,
            "base": base,
            "threshold": THRESHOLD,
            "cooldown": COOLDOWN,
            "refresh": REFRESH,
        }
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ask(self, n: int, concurrency: int = 1) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"n": n, "concurrency": concurrency}) + "\n")
        self.proc.stdin.flush()

    def answer(self) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            _, stderr = self.proc.communicate(timeout=10)
            raise AssertionError(f"the worker died: {stderr}")
        result: list[str] = json.loads(line)
        return result

    def call(self, n: int, concurrency: int = 1) -> list[str]:
        self.ask(n, concurrency)
        return self.answer()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        _, stderr = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0, stderr


def test_an_outage_seen_by_one_process_stops_every_process(
    url: str, upstream: tuple[Upstream, str]
) -> None:
    up, base = upstream
    a, b = Worker(url, base), Worker(url, base)
    try:
        assert a.call(1) == ["200"]
        assert b.call(1) == ["200"]  # B knows the circuit closed (and keeps that a while)

        up.status = 503
        assert a.call(THRESHOLD) == ["503"] * THRESHOLD  # A: 5 failures in a row
        opened = time.monotonic()
        assert up.requests == 2 + THRESHOLD

        time.sleep(REFRESH + 0.1)  # B's last look at the circuit is older than `refresh`
        out = b.call(3)
        assert [o.split(":")[0] for o in out] == ["open"] * 3, out
        assert all(0 < float(o.split(":")[1]) <= COOLDOWN for o in out), out
        assert up.requests == 2 + THRESHOLD  # B's calls failed fast: no network I/O
        assert a.call(2)[0].startswith("open:")
        assert up.requests == 2 + THRESHOLD

        # after the cooldown: exactly one probe across both processes (held 1 s upstream)
        up.delay = 1.0
        time.sleep(max(0.0, opened + COOLDOWN + 0.1 - time.monotonic()))
        a.ask(3, concurrency=3)
        b.ask(3, concurrency=3)
        outcomes = a.answer() + b.answer()
        assert sorted(outcomes) == ["503"] + ["probing"] * 5, outcomes
        assert up.requests == 2 + THRESHOLD + 1

        # the probe failed: open for another cooldown, for both
        up.delay, up.status = 0.0, 200
        time.sleep(REFRESH + 0.1)
        assert b.call(1)[0].startswith("open:")
        assert a.call(1)[0].startswith("open:")
        assert up.requests == 2 + THRESHOLD + 1

        # a probe that succeeds closes the circuit for every process
        time.sleep(COOLDOWN + 0.1)
        assert b.call(1) == ["200"]
        time.sleep(REFRESH + 0.1)
        assert a.call(3, concurrency=3) == ["200"] * 3
        assert up.requests == 2 + THRESHOLD + 1 + 4
    finally:
        a.close()
        b.close()


# -- in one process ------------------------------------------------------------------------


async def test_a_closed_circuit_costs_one_read_per_refresh_off_the_event_loop(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db", upgrade=True)
    statements: list[tuple[str, str]] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "circuit_breaker" in statement:
            verb = statement.split(maxsplit=1)[0].upper()
            statements.append((verb, threading.current_thread().name))

    answers: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200, json={})

    client = calbridge.make_http_client(
        transport=httpx.MockTransport(handler),
        breaker=calbridge.BreakerPolicy(threshold=3, refresh=0.5),
    )
    share_circuit_breaker(client, engine, provider="acme", app="app-1")

    async def call() -> int:
        request = client.build_request("GET", "https://acme.example/x")
        response = await calbridge.send(
            client, request, provider="acme", policy=calbridge.RetryPolicy(attempts=1)
        )
        return response.status_code

    try:
        for _ in range(50):
            assert await call() == 200
        assert [verb for verb, _ in statements] == ["SELECT"]  # one read; a success writes nothing
        await asyncio.sleep(0.55)
        for _ in range(20):
            assert await call() == 200
        assert [verb for verb, _ in statements] == ["SELECT", "SELECT"]

        answers.extend([503, 503])  # a failure is a state change: written at once
        assert await call() == 503
        assert await call() == 503
        assert await call() == 200  # the first success after failures writes; the next not
        assert await call() == 200
        breaker = calbridge.circuit_breaker(client, "acme")
        assert breaker is not None
        assert breaker.failures == 0
        assert len([s for s in statements if s[0] == "UPDATE"]) == 3
        # every statement ran on the database pool, none on the event loop's thread
        assert {name.split("_")[0] for _, name in statements} == {"calbridge-db"}
        assert SharedCircuit(engine, provider="acme", app="app-1").read().failures == 0
    finally:
        await client.aclose()
        engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _pair(url: str, clock: Clock) -> tuple[sa.Engine, CircuitBreaker, CircuitBreaker]:
    engine = create_engine(url, upgrade=False)
    policy = calbridge.BreakerPolicy(threshold=3, cooldown=30, refresh=0, probe_timeout=60)

    def breaker(app: str = "app-1") -> CircuitBreaker:
        shared = SharedCircuit(engine, provider="acme", app=app, clock=clock)
        return CircuitBreaker("acme", policy, shared=shared)

    return engine, breaker(), breaker()


def test_two_breakers_on_one_store_share_failures_and_one_probe(url: str) -> None:
    clock = Clock()
    engine, a, b = _pair(url, clock)
    try:
        assert a.enter() is False
        a.failed()
        b.failed()  # failures in a row count across processes
        assert a.enter() is False
        a.failed()
        with pytest.raises(errors.Unavailable, match="circuit breaker open") as info:
            b.enter()
        assert info.value.retry_after == pytest.approx(30, abs=0.5)
        assert b.failures == 3
        other = CircuitBreaker(
            "acme",
            a.policy,
            shared=SharedCircuit(engine, provider="acme", app="app-2", clock=clock),
        )
        assert other.enter() is False  # one circuit per provider and application

        clock.now += 30
        assert b.enter() is True  # the probe
        with pytest.raises(errors.Unavailable, match="half-open"):
            a.enter()
        b.failed(probe=True)  # open for another cooldown
        with pytest.raises(errors.Unavailable, match="circuit breaker open"):
            a.enter()

        clock.now += 30
        assert a.enter() is True  # A probes, then its process dies without a word
        with pytest.raises(errors.Unavailable, match="half-open"):
            b.enter()
        clock.now += 61  # the probe's claim ran out: another may go
        assert b.enter() is True
        b.succeeded(probe=True)
        assert a.enter() is False
        assert a.failures == 0
        assert a.state == "closed"
    finally:
        engine.dispose()


async def test_the_runtime_shares_each_providers_breaker_through_its_store(
    tmp_path: Path,
) -> None:
    from calbridge._breaker import circuit_breaker
    from calbridge._config import BridgeConfig
    from calbridge._runtime import Runtime
    from calbridge.provider import ProviderSettings
    from calbridge.store import generate_key
    from calbridge.testing import fresh_plugin_host

    config = BridgeConfig(
        database_url=f"sqlite:///{tmp_path}/rt.db",
        keys=f"k1:{generate_key()}",
        providers={"cronofy": ProviderSettings(client_id="app-1", client_secret="secret")},
    )
    runtime = Runtime.open(config, host=fresh_plugin_host())
    try:
        runtime.provider("cronofy")
        breaker = circuit_breaker(runtime.http, "cronofy")
        assert breaker is not None
        assert breaker.shared is not None
        assert (breaker.shared.provider, breaker.shared.app) == ("cronofy", "app-1")
        assert breaker.shared.engine is runtime.engine
    finally:
        await runtime.aclose()
