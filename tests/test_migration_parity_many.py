"""``Migrator.check_parity_many`` compares several users at once, consumes its users as it
goes, yields each result as it finishes and never lets one user's failure stop the rest."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path

import pytest

from calbridge import TimeRange
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.errors import Unavailable
from calbridge.migration import Migrator, ParityReport, ParityResult
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

WINDOW = TimeRange(
    start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
)


class Timed(Migrator):
    """A migrator whose comparison takes a while and records how many ran at once."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.active = 0
        self.most = 0
        self.started: list[str] = []

    async def check_parity(
        self,
        app_user_id: str,
        *,
        calendar: str = "primary",
        window: TimeRange | None = None,
        record: bool = True,
    ) -> ParityReport:
        self.started.append(app_user_id)
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await asyncio.sleep(0.05 if app_user_id != "slow" else 0.3)
            if app_user_id == "broken":
                raise Unavailable("the provider is down", provider="cronofy")
            return ParityReport(window=WINDOW, compared=1)
        finally:
            self.active -= 1


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = Runtime.open(
        BridgeConfig(database_url=f"sqlite:///{tmp_path / 'c.db'}", keys=f"k1:{generate_key()}"),
        host=fresh_plugin_host(),
    )
    try:
        yield rt
    finally:
        await rt.aclose()


async def test_users_are_compared_concurrently_and_streamed(runtime: Runtime) -> None:
    m = Timed(runtime)
    handed: list[str] = []

    def users() -> Iterator[str]:
        for name in ["slow", "broken", *(f"u{i}" for i in range(10))]:
            handed.append(name)
            yield name

    results: list[ParityResult] = []
    async for result in m.check_parity_many(users(), concurrency=3):
        if not results:  # the first result comes before the users are all taken
            assert len(handed) <= 4
        results.append(result)
    assert m.most == 3
    statuses = {r.app_user_id: r.status for r in results}
    assert statuses.pop("broken") == "error"
    assert set(statuses.values()) == {"clean"}
    assert len(statuses) == 11
    # the slow user finished after faster ones that started later
    order = [r.app_user_id for r in results]
    assert order.index("slow") > order.index("u0")


async def test_concurrency_one_compares_in_order(runtime: Runtime) -> None:
    m = Timed(runtime)
    names = ["slow", "u1", "u2"]
    got = [r.app_user_id async for r in m.check_parity_many(names, concurrency=1)]
    assert got == names
    assert m.most == 1
    with pytest.raises(ValueError, match="at least 1"):
        [r async for r in m.check_parity_many(names, concurrency=0)]


async def test_stopping_early_cancels_the_running_comparisons(runtime: Runtime) -> None:
    m = Timed(runtime)
    stream = m.check_parity_many([f"u{i}" for i in range(20)], concurrency=4)
    assert isinstance(stream, AsyncGenerator)
    first = await anext(stream)
    assert first.status == "clean"
    await stream.aclose()
    await asyncio.sleep(0.1)
    assert m.active == 0
    assert len(m.started) < 20
