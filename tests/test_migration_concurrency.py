"""Concurrent migration runs on one store (SQLite and PostgreSQL): a step is a
compare-and-set on the routing row read when its guards were checked, so of two runs that
both passed the guards exactly one moves the user and writes the audit entry; the other
gets a typed ConcurrentTransition and writes nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.migration import ConcurrentTransition, Migrator
from calbridge.migration._guards import Guard, GuardKind
from calbridge.migration._machine import _Snapshot
from calbridge.router import Phase
from calbridge.store.testing import db_url, engine, fresh_postgres_url
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

__all__ = ["db_url", "engine", "fresh_postgres_url"]


@attrs.define
class Racing(Migrator):
    """A migrator that waits at ``barrier`` after checking the guards, before writing."""

    barrier: threading.Barrier | None = None
    on_checked: Callable[[], object] | None = None

    async def _check(
        self,
        snap: _Snapshot,
        to: Phase,
        *,
        record: bool,
        skip: frozenset[GuardKind] = frozenset(),
    ) -> list[Guard]:
        found = await super()._check(snap, to, record=record, skip=skip)
        if self.barrier is not None:
            self.barrier.wait(timeout=20)
        if self.on_checked is not None:
            hook, self.on_checked = self.on_checked, None
            hook()
        return found


@pytest.fixture
async def runtime(engine: sa.Engine, db_url: str) -> AsyncIterator[Runtime]:
    """A runtime on a migrated database; ann holds a Google and an active Cronofy account."""
    rt = Runtime.open(
        BridgeConfig(database_url=db_url, keys=f"k1:{generate_key()}"), host=fresh_plugin_host()
    )
    for provider in ("google", "cronofy"):
        rt.store.accounts.upsert_account(
            app_user_id="ann",
            provider=provider,
            provider_account_id=f"{provider}-ann",
            email="ann@example.com",
        )
    try:
        yield rt
    finally:
        await rt.aclose()


def race(*calls: Callable[[], Coroutine[Any, Any, bool]]) -> list[bool | BaseException]:
    """Run each coroutine in its own thread and event loop; results or exceptions."""
    out: list[bool | BaseException] = [False] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = asyncio.run(calls[i]())
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def audits(rt: Runtime, action: str) -> int:
    return len(rt.store.audit_log.audit_entries(app_user_id="ann", action=action))


def migrators(rt: Runtime) -> tuple[Racing, Racing]:
    barrier = threading.Barrier(2)
    return Racing(rt, clean_period=0, barrier=barrier), Racing(rt, clean_period=0, barrier=barrier)


async def test_two_runs_same_step_one_moves(runtime: Runtime) -> None:
    """Both check the guards on the user's first (missing) routing row; one inserts it,
    the other loses cleanly: settled (the user is where it wanted), nothing written."""
    a, b = migrators(runtime)
    results = race(lambda: a.move("ann", Phase.SHADOW), lambda: b.move("ann", Phase.SHADOW))
    assert results.count(True) == 1, results
    [lost] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(lost, ConcurrentTransition), repr(lost)
    assert (lost.expected, lost.found, lost.settled) == (Phase.LEGACY, Phase.SHADOW, True)
    assert a.status("ann").phase is Phase.SHADOW
    assert audits(runtime, "migration.shadow") == 1
    row = runtime.store.routing.get_routing("ann")
    assert row is not None
    assert row.version == 1


async def test_conflicting_steps_one_wins_loser_writes_nothing(runtime: Runtime) -> None:
    """dual and rollback race from shadow: one phase results, one audit entry, and the
    loser's error says the user moved away from where its guards were checked."""
    plain = Migrator(runtime)
    assert await plain.move("ann", Phase.SHADOW)
    before = runtime.store.routing.get_routing("ann")
    assert before is not None
    version = before.version
    a, b = migrators(runtime)
    results = race(lambda: a.move("ann", Phase.DUAL), lambda: b.rollback("ann"))
    assert results.count(True) == 1, results
    [lost] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(lost, ConcurrentTransition), repr(lost)
    assert not lost.settled
    assert lost.expected is Phase.SHADOW
    final = plain.status("ann").phase
    assert final is lost.found
    assert final in (Phase.DUAL, Phase.LEGACY)
    assert audits(runtime, "migration.dual") + audits(runtime, "migration.legacy") == 1
    after = runtime.store.routing.get_routing("ann")
    assert after is not None
    assert after.version == version + 1


async def test_a_write_that_keeps_the_phase_means_check_again(runtime: Runtime) -> None:
    """A parity record (or the router's last provider) landing between check and write
    makes the step re-read and re-check, not fail."""
    m = Racing(runtime, clean_period=0)
    m.on_checked = lambda: runtime.update_routing("ann", data={"last_provider": "google"})
    assert await m.move("ann", Phase.SHADOW)
    row = runtime.store.routing.get_routing("ann")
    assert row is not None
    assert (row.phase, row.data["last_provider"]) == ("shadow", "google")
    assert audits(runtime, "migration.shadow") == 1


async def test_bulk_counts_a_settled_loss_as_already(runtime: Runtime) -> None:
    """Two bulk runs of the same cohort: each user moved once; the loser reports
    `already` (settled) rather than a refusal."""
    a, b = migrators(runtime)
    out: list[Any] = [None, None]

    def run(i: int, m: Migrator) -> None:
        out[i] = asyncio.run(m.bulk(["ann"], Phase.SHADOW))

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(len(r.moved) for r in out) == [0, 1]
    assert sorted(len(r.already) for r in out) == [0, 1]
    assert all(r.refused == () for r in out)
    assert audits(runtime, "migration.shadow") == 1
