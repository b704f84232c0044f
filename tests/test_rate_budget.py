"""The application-wide rate budget: several processes on one store share one budget.

Workers are real subprocesses (``python -c``) on the same SQLite file or PostgreSQL
database (``db_url``: the PostgreSQL half runs under ``scripts/with-postgres.sh``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import sqlalchemy as sa

import calbridge
from calbridge import RateBudget, RateQuota, RateWindow, background_calls, install_rate_budget
from calbridge._budget import call_priority, counted
from calbridge.errors import RateLimited
from calbridge.store import create_engine, schema
from calbridge.store.testing import db_url, fresh_postgres_url

__all__ = ["db_url", "fresh_postgres_url"]

ROOT = Path(__file__).resolve().parent.parent

#: small windows, so a test sees several of them in a few seconds
HALF = RateWindow("half", 10, 0.5, slots=10)
TWO = RateWindow("two", 30, 2.0, slots=20)


def quota_json(q: RateQuota) -> dict[str, Any]:
    return {
        "windows": [[w.name, w.limit, w.period, w.slots] for w in q.windows],
        "reserve": q.reserve,
        "margin": q.margin,
        "min_margin": q.min_margin,
        "batch": q.batch,
    }


def quota_from(spec: dict[str, Any]) -> RateQuota:
    return RateQuota(
        windows=tuple(
            RateWindow(n, int(lim), float(p), int(s)) for n, lim, p, s in spec["windows"]
        ),
        reserve=float(spec["reserve"]),
        margin=float(spec["margin"]),
        min_margin=float(spec.get("min_margin", 0.25)),
        batch=int(spec["batch"]),
    )


async def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One worker process: ``tasks`` tasks each take ``n`` grants (or send ``n`` calls)."""
    engine = create_engine(spec["url"], upgrade=False)
    budget = RateBudget(
        engine, provider="cronofy", app=spec["app"], quota=quota_from(spec["quota"])
    )
    stamps: list[float] = []
    statuses: list[int] = []
    client = calbridge.make_http_client() if spec.get("base") else None
    if client is not None:
        install_rate_budget(client, budget)
        # Open the pooled connections, one per task (and finish httpx's lazy set-up),
        # before the start: a grant whose request then spends a cold start on the way
        # reaches the sandbox later than grants taken after it, which is start-up noise,
        # not the budget's (the control endpoint is not an API call: it is not counted).
        warm = [client.get(f"{spec['base']}/_sandbox/requests") for _ in range(spec["tasks"])]
        for answer in await asyncio.gather(*warm):
            answer.raise_for_status()
    await start_signal(spec["offset"])

    async def task() -> None:
        if spec["priority"] == "background":
            with background_calls():
                await draw()
        else:
            await draw()

    async def draw() -> None:
        for _ in range(spec["n"]):
            if client is None:
                stamps.append(await budget.acquire())
                continue
            request = client.build_request(
                "GET",
                f"{spec['base']}/cronofy/v1/calendars",
                headers={"Authorization": f"Bearer {spec['token']}"},
            )
            response = await calbridge.send(
                client, request, provider="cronofy", policy=calbridge.RetryPolicy(attempts=1)
            )
            stamps.append(time.time())
            statuses.append(response.status_code)

    try:
        await asyncio.gather(*(task() for _ in range(spec["tasks"])))
    finally:
        if client is not None:
            await client.aclose()
        engine.dispose()
    return {"at": stamps, "statuses": statuses}


async def start_signal(offset: float) -> None:
    """In a worker, set up and ready: say so, then wait for the start time the test sends
    (:func:`start_together`) and ``offset`` seconds more."""
    print("ready", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    delay = float(line) + offset - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def start_together(procs: list[subprocess.Popen[str]], lead: float = 0.2) -> None:
    """Once every worker is ready (imported, connected: a slow start on a busy host is
    not the budget's business), send them all one start time, ``lead`` seconds ahead."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            _out, err = proc.communicate(timeout=60)
            raise AssertionError(f"a worker failed before the start: {err}")
    go = time.time() + lead
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{go}\n")
        proc.stdin.flush()


_WORKER = (
    "import asyncio, json, sys\n"
    "from tests.test_rate_budget import run_worker\n"
    "print(json.dumps(asyncio.run(run_worker(json.loads(sys.argv[1])))))\n"
)


def spawn(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return spawn_code(_WORKER, json.dumps(spec))


def spawn_code(code: str, argument: str) -> subprocess.Popen[str]:
    """``python -c code argument`` in the repository, printing its result on stdout."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, argument],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def most_in_window(stamps: list[float], period: float) -> int:
    """The most grants in any window ``(t - period, t]``."""
    ms = sorted(round(t * 1000) for t in stamps)
    span = round(period * 1000)
    best, j = 0, 0
    for i, t in enumerate(ms):
        while ms[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


def worker_spec(url: str, quota: RateQuota, **kw: Any) -> dict[str, Any]:
    return {
        "url": url,
        "app": "app-1",
        "quota": quota_json(quota),
        "priority": "user",
        "tasks": 2,
        "n": 7,
        "offset": 0.0,
        **kw,
    }


@pytest.fixture
def url(db_url: str) -> str:
    create_engine(db_url, upgrade=True).dispose()
    return db_url


# -- what is counted ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "is_counted"),
    [
        ("https://api.cronofy.com/oauth/token", False),
        ("https://api.cronofy.com/oauth/token/revoke", False),
        ("http://127.0.0.1:8800/cronofy/oauth/token", False),
        ("https://oauth2.googleapis.com/token", False),
        ("https://oauth2.googleapis.com/revoke", False),
        ("http://127.0.0.1:8800/google/oauth2/revoke", False),
        ("https://login.microsoftonline.com/common/oauth2/v2.0/token", False),
        ("https://api.cronofy.com/v1/events", True),
        ("https://api.cronofy.com/v1/profiles/pro_1/revoke", True),
        ("https://api.cronofy.com/v1/userinfo", True),
        ("https://www.googleapis.com/calendar/v3/calendars/primary/events", True),
        ("https://graph.microsoft.com/v1.0/me/revokeSignInSessions", True),
        ("https://graph.microsoft.com/v1.0/me/events/delta", True),
    ],
)
def test_token_endpoint_calls_are_not_counted(address: str, is_counted: bool) -> None:
    assert counted(httpx.Request("POST", address)) is is_counted


def test_priority_is_user_unless_background() -> None:
    assert call_priority() == "user"
    with background_calls():
        assert call_priority() == "background"
    assert call_priority() == "user"


# -- several processes, one budget ---------------------------------------------------------


def test_processes_sharing_a_store_never_exceed_the_caps(url: str) -> None:
    quota = RateQuota(windows=(HALF, TWO), margin=0.0)
    procs = [spawn(worker_spec(url, quota)) for _ in range(3)]
    start_together(procs)
    stamps = [t for r in results(procs) for t in r["at"]]
    assert len(stamps) == 3 * 2 * 7
    assert most_in_window(stamps, HALF.period) <= HALF.limit
    assert most_in_window(stamps, TWO.period) <= TWO.limit
    # and the budget is used, not merely respected: the first 2-second window is nearly full
    first = min(stamps)
    assert sum(1 for t in stamps if t < first + TWO.period) >= TWO.limit - 3


def test_batches_never_exceed_the_caps(url: str) -> None:
    quota = RateQuota(windows=(RateWindow("one", 40, 1.0, slots=10),), margin=0.0, batch=4)
    procs = [spawn(worker_spec(url, quota, n=10)) for _ in range(3)]
    start_together(procs)
    stamps = [t for r in results(procs) for t in r["at"]]
    assert len(stamps) == 60
    assert most_in_window(stamps, 1.0) <= 40


def test_background_work_leaves_the_reserve_to_user_calls(url: str) -> None:
    quota = RateQuota(windows=(HALF, TWO), margin=0.0, reserve=0.3)
    background = [spawn(worker_spec(url, quota, priority="background", n=8)) for _ in range(2)]
    user = spawn(worker_spec(url, quota, offset=0.3, tasks=1, n=8))
    start_together([*background, user])
    bg_stamps = [t for r in results(background) for t in r["at"]]
    user_stamps = results([user])[0]["at"]
    everything = bg_stamps + user_stamps
    assert len(bg_stamps) == 32
    assert most_in_window(everything, HALF.period) <= HALF.limit
    assert most_in_window(everything, TWO.period) <= TWO.limit
    # while user calls are about, background never takes the last 30% of a window ...
    during = [t for t in bg_stamps if min(user_stamps) <= t <= max(user_stamps)]
    assert most_in_window(during, HALF.period) <= 7
    assert most_in_window(during, TWO.period) <= 21
    # ... so user calls are served while background work queues: 8 calls in well under the
    # 2.4+ s the background needs for its 32
    assert max(user_stamps) - min(user_stamps) < TWO.period
    assert max(user_stamps) < max(bg_stamps)


def test_with_no_user_calls_about_background_work_uses_the_whole_window(url: str) -> None:
    quota = RateQuota(windows=(HALF, TWO), margin=0.0, min_margin=0.0, reserve=0.3)
    background = [spawn(worker_spec(url, quota, priority="background", n=8)) for _ in range(2)]
    start_together(background)
    stamps = [t for r in results(background) for t in r["at"]]
    assert len(stamps) == 32
    assert most_in_window(stamps, HALF.period) == HALF.limit  # the reserve is lent, not idle
    assert most_in_window(stamps, TWO.period) <= TWO.limit


def test_a_429_pauses_every_process(url: str) -> None:
    quota = RateQuota(windows=(HALF, TWO), margin=0.0)
    engine = create_engine(url, upgrade=False)
    try:
        budget = RateBudget(engine, provider="cronofy", app="app-1", quota=quota)
        assert budget.pause(3.0) == 3.0
        with engine.connect() as conn:
            until = conn.execute(sa.select(sa.func.max(schema.rate_budget.c.paused_until_ms)))
            paused_until = int(until.scalar_one()) / 1000
    finally:
        engine.dispose()
    procs = [spawn(worker_spec(url, quota, n=2)) for _ in range(2)]
    start_together(procs)
    stamps = [t for r in results(procs) for t in r["at"]]
    assert len(stamps) == 8
    assert min(stamps) >= paused_until


def test_one_budget_per_provider_and_application(url: str) -> None:
    quota = RateQuota(windows=(RateWindow("one", 2, 60.0, slots=10),), margin=0.0)
    engine = create_engine(url, upgrade=False)

    async def main() -> None:
        a = RateBudget(engine, provider="cronofy", app="app-1", quota=quota)
        b = RateBudget(engine, provider="cronofy", app="app-2", quota=quota)
        c = RateBudget(engine, provider="google", app="app-1", quota=quota)
        for budget in (a, b, c):
            await budget.acquire()
            await budget.acquire()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.acquire(), 0.3)
        assert a.state()["windows"]["one"] == {"limit": 2, "used": 2}

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


# -- pauses, in one process with a fake clock -------------------------------------------


def test_pauses_without_retry_after_double_and_retry_after_wins(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db", upgrade=True)
    now = [1_000_000.0]
    quota = RateQuota(windows=(HALF,), first_pause=1.0, max_pause=4.0)
    budget = RateBudget(engine, provider="cronofy", app="a", quota=quota, clock=lambda: now[0])
    try:
        assert budget.pause() == 1.0
        assert budget.pause() == 1.0  # a 429 of a call sent before the pause: same pause
        now[0] += 1.5  # the pause is over; throttled again right away: twice as long
        assert budget.pause() == 2.0
        now[0] += 2.5
        assert budget.pause() == 4.0
        now[0] += 4.5
        assert budget.pause() == 4.0  # capped
        now[0] += 100  # long after: back to the first pause
        assert budget.pause() == 1.0
        assert budget.pause(7.5) == 7.5  # the provider's Retry-After
        assert budget.state()["paused_for"] == pytest.approx(7.5)
    finally:
        engine.dispose()


# -- through calbridge.send --------------------------------------------------------------


async def test_send_counts_api_calls_only_and_a_429_pauses_the_budget(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db", upgrade=True)
    quota = RateQuota(windows=(RateWindow("one", 100, 60.0),))
    budget = RateBudget(engine, provider="cronofy", app="a", quota=quota)
    answers: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            status = answers.pop(0)
            return httpx.Response(status, headers={"Retry-After": "0.2"})
        return httpx.Response(200, json={})

    client = calbridge.make_http_client(transport=httpx.MockTransport(handler))
    install_rate_budget(client, budget)
    try:

        async def call(url: str, policy: calbridge.RetryPolicy | None = None) -> int:
            request = client.build_request("GET", url)
            response = await calbridge.send(client, request, provider="cronofy", policy=policy)
            return response.status_code

        assert await call("https://api.cronofy.com/oauth/token") == 200
        assert budget.state()["windows"]["one"]["used"] == 0
        assert await call("https://api.cronofy.com/v1/events") == 200
        assert budget.state()["windows"]["one"]["used"] == 1

        answers.append(429)  # throttled once: paused 0.2 s, then retried (a second grant)
        started = time.monotonic()
        assert await call("https://api.cronofy.com/v1/events") == 200
        assert time.monotonic() - started >= 0.2
        assert budget.state()["windows"]["one"]["used"] == 3

        budget.pause(40.0)  # longer than the policy waits: raise, so a job can be rescheduled
        with pytest.raises(RateLimited) as caught:
            await call("https://api.cronofy.com/v1/events", calbridge.RetryPolicy(max_wait=30))
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 30
        assert await call("https://api.cronofy.com/oauth/token") == 200  # not held up
    finally:
        await client.aclose()
        engine.dispose()


# -- end to end: processes against the rate-limited Cronofy sandbox ------------------------


def test_processes_against_the_sandbox_get_no_429(url: str) -> None:
    from calbridge_cronofy.sandbox import create_app, engine_for

    from calbridge.sandbox import World, build_app, serve_in_thread

    world = World()
    world.add_application("app-1", "secret")
    world.add_user("alice@example.com")
    engine_for(world).settings.rate_limits = ((10, 1.0), (30, 4.0))
    quota = RateQuota(windows=(RateWindow("1s", 10, 1.0), RateWindow("4s", 30, 4.0)))
    with serve_in_thread(build_app(world, {"cronofy": create_app})) as server:
        base = server.base_url
        with httpx.Client(base_url=base) as http:
            r = http.get(
                "/cronofy/oauth/authorize",
                params={
                    "response_type": "code",
                    "client_id": "app-1",
                    "redirect_uri": "http://app.example/cb",
                    "scope": "read_events",
                    "login_hint": "alice@example.com",
                },
            )
            code = httpx.URL(r.headers["location"]).params["code"]
            token = http.post(
                "/cronofy/oauth/token",
                json={
                    "client_id": "app-1",
                    "client_secret": "secret",
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": "http://app.example/cb",
                },
            ).json()["access_token"]
            http.delete("/_sandbox/requests")
            procs = [spawn(worker_spec(url, quota, base=base, token=token, n=7)) for _ in range(3)]
            start_together(procs)
            found = results(procs)
            counts = http.get("/_sandbox/requests").json()["providers"]["cronofy"]
    statuses = [s for r in found for s in r["statuses"]]
    assert statuses == [200] * 42
    assert counts["limited"] == 42
    assert counts["throttled"] == 0


# -- the runtime installs the budget --------------------------------------------------------


async def test_the_runtime_takes_cronofy_calls_from_the_shared_budget(tmp_path: Path) -> None:
    from calbridge_cronofy.sandbox import create_app, engine_for

    from calbridge._config import BridgeConfig
    from calbridge._runtime import Runtime
    from calbridge.sandbox import World, build_app, serve_in_thread
    from calbridge.store import generate_key
    from calbridge.testing import fresh_plugin_host

    world = World()
    world.add_application("app-1", "secret")
    with serve_in_thread(build_app(world, {"cronofy": create_app})) as server:
        config = BridgeConfig(
            database_url=f"sqlite:///{tmp_path}/rt.db",
            keys=f"k1:{generate_key()}",
            providers={
                "cronofy": calbridge.ProviderSettings(
                    client_id="app-1",
                    client_secret="secret",
                    base_urls={"api": f"{server.base_url}/cronofy"},
                    options={"clock": world.clock.now},
                )
            },
        )
        runtime = Runtime.open(config, host=fresh_plugin_host(), clock=world.clock.timestamp)
        try:
            provider = runtime.provider("cronofy")
            budget = calbridge.rate_budget(runtime.http, "cronofy")
            assert budget is not None
            assert budget.app == "app-1"
            assert [w.limit for w in budget.quota.windows] == [50, 500]
            assert provider._limiters == []  # type: ignore[attr-defined]  # budget instead

            sandbox = engine_for(world)
            account = sandbox.account_for("alice@example.com")
            code = sandbox.issue_code("app-1", "http://app.example/cb", account.sub, "")
            grant = await provider.exchange_code(code=code, redirect_uri="http://app.example/cb")
            assert budget.state()["windows"]["60s"]["used"] == 0  # a token call: not counted

            session = calbridge.Session(
                account=calbridge.Account(
                    id="acc-1",
                    app_user_id="alice",
                    provider="cronofy",
                    provider_account_id=grant.provider_account_id,
                ),
                tokens=calbridge.StaticTokenSource(grant.tokens),
            )
            await provider.list_calendars(session)
            assert budget.state()["windows"]["60s"]["used"] == 1
            counts = calbridge.sandbox.request_counts(world, "cronofy")
            assert (counts.limited, counts.throttled) == (1, 0)
        finally:
            await runtime.aclose()


def test_the_budget_can_be_turned_off(tmp_path: Path) -> None:
    from calbridge._config import BridgeConfig
    from calbridge._runtime import Runtime
    from calbridge.testing import fresh_plugin_host

    config = BridgeConfig(
        database_url=f"sqlite:///{tmp_path}/rt.db",
        providers={
            "cronofy": calbridge.ProviderSettings(client_id="a", options={"rate_budget": False})
        },
    )
    runtime = Runtime.open(config, host=fresh_plugin_host())
    try:
        provider = runtime.provider("cronofy")
        assert calbridge.rate_budget(runtime.http, "cronofy") is None
        assert len(provider._limiters) == 2  # type: ignore[attr-defined]  # per process
    finally:
        asyncio.run(runtime.aclose())

    # limiters configured explicitly (none here): the caller limits itself, no budget ...
    own = calbridge.ProviderSettings(client_id="a", options={"rate_limiters": ()})
    runtime = Runtime.open(
        attrs.evolve(config, providers={"cronofy": own}), host=fresh_plugin_host()
    )
    try:
        runtime.provider("cronofy")
        assert calbridge.rate_budget(runtime.http, "cronofy") is None
    finally:
        asyncio.run(runtime.aclose())
    # ... unless it asks for both
    both = calbridge.ProviderSettings(
        client_id="a", options={"rate_limit_per_second": 10, "rate_budget": True}
    )
    runtime = Runtime.open(
        attrs.evolve(config, providers={"cronofy": both}), host=fresh_plugin_host()
    )
    try:
        provider = runtime.provider("cronofy")
        assert calbridge.rate_budget(runtime.http, "cronofy") is not None
        assert len(provider._limiters) == 2  # type: ignore[attr-defined]
    finally:
        asyncio.run(runtime.aclose())
