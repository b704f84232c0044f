"""Fairness across accounts in the shared rate budget: one account's backfill does not
starve the others, in a process (waiters served round-robin by account) and across
processes (an account over its share yields to one with fewer grants that waits).

Workers are real subprocesses on the same SQLite file or PostgreSQL database (the
PostgreSQL half runs under ``scripts/with-postgres.sh``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import calbridge
from calbridge import RateBudget, RateQuota, RateWindow, background_calls
from calbridge._budget import call_account, calls_for_account
from calbridge.store import create_engine
from calbridge.store.testing import db_url, fresh_postgres_url
from tests.test_rate_budget import results, spawn_code, start_signal, start_together

__all__ = ["db_url", "fresh_postgres_url"]

#: 20 grants a second, in slots of 50 ms
WINDOW = RateWindow("half", 10, 0.5, slots=10)


def quota(share: float) -> RateQuota:
    return RateQuota(
        windows=(WINDOW,), margin=0.0, min_margin=0.0, reserve=0.0, account_share=share
    )


@pytest.fixture
def url(db_url: str) -> str:
    create_engine(db_url, upgrade=True).dispose()
    return db_url


def between(others: list[list[float]], mine: list[list[float]]) -> list[int]:
    """For each of ``mine`` (requested, granted): how many of ``others`` were granted
    after it was requested and before it was granted."""
    granted = [g for _r, g in others]
    return [sum(1 for g in granted if r < g < got) for r, got in mine]


async def run_fair_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``tasks`` tasks each take ``n`` background grants for ``account``; returns each
    grant's (requested, granted) times, the store's."""
    engine = create_engine(spec["url"], upgrade=False)
    budget = RateBudget(engine, provider="cronofy", app="app-1", quota=quota(float(spec["share"])))
    budget.state()  # connected, rows made: the first call is not slowed by the setup
    await start_signal(spec["offset"])
    calls: list[list[float]] = []

    async def task() -> None:
        with background_calls(), calls_for_account(spec["account"]):
            for _ in range(spec["n"]):
                requested = time.time()
                calls.append([requested, await budget.acquire()])

    try:
        await asyncio.gather(*(task() for _ in range(spec["tasks"])))
    finally:
        engine.dispose()
    return {"calls": calls}


def spawn(
    url: str, account: str, *, tasks: int, n: int, share: float, offset: float = 0.0
) -> subprocess.Popen[str]:
    spec = {
        "url": url,
        "account": account,
        "offset": offset,
        "tasks": tasks,
        "n": n,
        "share": share,
    }
    code = (
        "import asyncio, json, sys\n"
        "from tests.test_budget_fair import run_fair_worker\n"
        "print(json.dumps(asyncio.run(run_fair_worker(json.loads(sys.argv[1])))))\n"
    )
    return spawn_code(code, json.dumps(spec))


def test_the_account_is_noted_by_the_session_and_scoped_by_calls_for_account() -> None:
    session = calbridge.Session(
        account=calbridge.Account(
            id="acc-1", app_user_id="u", provider="cronofy", provider_account_id="p"
        ),
        tokens=calbridge.StaticTokenSource(
            tokens=calbridge.TokenSet(access_token=calbridge.Secret("tok"))
        ),
    )

    async def main() -> tuple[str | None, str | None]:
        with calls_for_account("other"):
            scoped = call_account()
        await session.access_token()  # a provider call follows: it is acc-1's
        return scoped, call_account()

    assert asyncio.run(main()) == ("other", "acc-1")
    assert call_account() is None


async def test_waiters_in_a_process_are_served_round_robin_by_account(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db", upgrade=True)
    budget = RateBudget(engine, provider="cronofy", app="a", quota=quota(1.0))  # no share cap
    flood: list[list[float]] = []
    few: list[list[float]] = []

    async def take(account: str, n: int, into: list[list[float]]) -> None:
        with background_calls(), calls_for_account(account):
            for _ in range(n):
                requested = time.time()
                into.append([requested, await budget.acquire()])

    try:
        backfill = [asyncio.create_task(take("big", 3, flood)) for _ in range(20)]
        await asyncio.sleep(0.2)  # the flood fills the window; 20 calls wait
        await take("small", 3, few)
        # each small call is granted within two of the flood's (20 calls wait before it)
        assert all(n <= 2 for n in between(flood, few)), between(flood, few)
        await asyncio.gather(*backfill)
        assert len(flood) == 60
    finally:
        engine.dispose()


def test_one_account_flooding_does_not_starve_another_across_processes(url: str) -> None:
    big = [
        spawn(url, "big", tasks=6, n=6, share=0.25),
        spawn(url, "big", tasks=6, n=6, share=0.25),
    ]
    small = spawn(url, "small", offset=0.8, tasks=1, n=4, share=0.25)
    start_together([*big, small])
    flood = [c for r in results(big) for c in r["calls"]]
    few = results([small])[0]["calls"]
    assert len(flood) == 72
    assert len(few) == 4
    # while the small account waits, the flood gets no more than its share of a window
    # (3 of 10) and one grant its process asked for as the small account did: each small
    # call is granted within 4 of the flood's grants, not after the flood (3.6 s)
    assert all(n <= 4 for n in between(flood, few)), between(flood, few)
    assert max(g for _r, g in few) < max(g for _r, g in flood) - 1.0


def test_an_account_alone_gets_the_whole_budget(url: str) -> None:
    only = spawn(url, "big", tasks=4, n=10, share=0.25)
    start_together([only])
    calls = results([only])[0]["calls"]
    granted = sorted(g for _r, g in calls)
    assert len(granted) == 40
    # the first window holds the limit's grants, not a quarter of them
    assert sum(1 for g in granted if g < granted[0] + WINDOW.period) == WINDOW.limit


def test_a_served_account_stays_counted_as_waiting_for_one_slot(tmp_path: Path) -> None:
    """Between an account's grant and its next request reaching the store, an account over
    its share does not take the room: the served one counts as waiting for one more slot
    (50 ms here), then no longer holds the other back."""
    engine = create_engine(f"sqlite:///{tmp_path}/b.db", upgrade=True)
    now = [1_000_000.0]
    budget = RateBudget(
        engine, provider="cronofy", app="a", quota=quota(0.25), clock=lambda: now[0]
    )

    def take(account: str) -> bool:
        return budget._take("background", 1, account).granted == 1

    try:
        assert [take("big") for _ in range(3)] == [True] * 3  # its share of 10: 3
        assert take("small")
        assert not take("big")  # small was just served: it may ask again at once
        now[0] += 0.06  # one slot later small has not asked: big goes on
        assert take("big")
        assert take("big")
    finally:
        engine.dispose()
