"""The console's read-only queries (``calbridge/store/_console_queries.py``) on SQLite and
PostgreSQL, against rows written through the store's, the queue's and the migration's
own APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.migration import Migrator
from calbridge.store import _console_queries as q
from calbridge.store import read
from calbridge.store.testing import db_url, engine, fresh_postgres_url
from calbridge.store.vault import generate_key

__all__ = ["db_url", "engine", "fresh_postgres_url"]


@pytest.fixture
async def bridge(engine: sa.Engine, db_url: str) -> AsyncIterator[CalBridge]:
    config = BridgeConfig(database_url=db_url, keys=f"k1:{generate_key()}")
    async with CalBridge(config) as opened:
        yield opened


async def test_phases_users_and_jobs_of_one_user(bridge: CalBridge) -> None:
    """Counts per phase include users without a phase; the phase list filters by a
    search whose LIKE wildcards are literal; a user's jobs are those whose payload names
    the user or one of their accounts, not a user whose id merely contains theirs."""
    store = bridge.store
    ann = store.accounts.upsert_account(
        app_user_id="ann", provider="google", provider_account_id="g-ann"
    )
    store.accounts.upsert_account(
        app_user_id="annabel", provider="google", provider_account_id="g-annabel"
    )
    store.accounts.upsert_account(app_user_id="a_b%", provider="google", provider_account_id="g-x")
    store.accounts.upsert_account(app_user_id="axb", provider="google", provider_account_id="g-y")
    migrator = Migrator(bridge.runtime)
    assert await migrator.enroll("ann")
    assert await migrator.enroll("a_b%")

    with read(bridge.runtime.engine) as conn:
        assert q.phase_counts(conn) == {"legacy": 2, q.NOT_UNDER_MIGRATION: 2}
        assert q.users_in_phase(conn, "legacy") == ["a_b%", "ann"]
        assert q.users_in_phase(conn, q.NOT_UNDER_MIGRATION) == ["annabel", "axb"]
        assert q.users_in_phase(conn, "legacy", search="_b%") == ["a_b%"]
        assert q.users_in_phase(conn, q.NOT_UNDER_MIGRATION, search="_b") == []
        assert q.users_in_phase(conn, "legacy", limit=1, offset=1) == ["ann"]

    queue = bridge.runtime.queue
    assert ann.id is not None
    mine = [
        queue.enqueue("sync", {"account": ann.id, "calendar": "c1"}),
        queue.enqueue("migration.compare", {"app_user_id": "ann"}),
    ]
    queue.enqueue("migration.compare", {"app_user_id": "annabel"})
    queue.enqueue("deliver", {"account": "someone-else"})
    with read(bridge.runtime.engine) as conn:
        jobs = q.user_jobs(conn, "ann", [ann.id])
        states = q.job_states(conn)
    assert sorted(j.id for j in jobs) == sorted(mine)
    assert all(j.state == "queued" for j in jobs)
    counts = sorted((s.queue, s.kind, s.state, s.count, s.retried) for s in states)
    assert counts == [
        ("default", "deliver", "queued", 1, 0),
        ("default", "migration.compare", "queued", 2, 0),
        ("default", "sync", "queued", 1, 0),
    ]
    assert all(s.oldest_run_at_ms is not None for s in states)

    claimed = queue.claim(owner="test", kinds=["sync"], lease=30)
    assert claimed is not None
    assert queue.fail(claimed, error="provider said 500", retry_in=60) == "queued"
    with read(bridge.runtime.engine) as conn:
        sync = [s for s in q.job_states(conn) if s.kind == "sync"]
        still_mine = q.user_jobs(conn, "ann", [ann.id])
    assert [(s.state, s.count, s.retried) for s in sync] == [("queued", 1, 1)]
    assert [j.attempts for j in still_mine if j.kind == "sync"] == [1]


async def test_inbox_channels_accounts_and_budget_rows(bridge: CalBridge) -> None:
    """The inbox per provider (pending, processed, oldest pending, newest), account
    states, and no channel or budget row when none exists."""
    store = bridge.store
    store.accounts.upsert_account(app_user_id="ann", provider="google", provider_account_id="g-ann")
    first = store.channels.inbox_insert(
        provider="google", delivery_key="1", kind="sync", payload={}
    )
    store.channels.inbox_insert(provider="google", delivery_key="2", kind="sync", payload={})
    store.channels.inbox_insert(provider="cronofy", delivery_key="1", kind="sync", payload={})
    assert first is not None
    store.channels.inbox_mark_processed(first)
    with read(bridge.runtime.engine) as conn:
        inbox = {row.provider: row for row in q.inbox_backlog(conn)}
        accounts = q.account_states(conn)
        channels = q.channel_states(conn)
        budgets = q.budget_windows(conn)
    assert (inbox["google"].pending, inbox["google"].processed) == (1, 1)
    assert (inbox["cronofy"].pending, inbox["cronofy"].processed) == (1, 0)
    assert inbox["google"].oldest_pending_at is not None
    assert inbox["google"].newest_received_at is not None
    assert accounts == {("google", "active"): 1}
    assert channels == {}
    assert budgets == []
