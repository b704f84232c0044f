"""The event loop never waits on the database (issue #18, item 4).

Every store, queue and engine call made from async code goes through one boundary,
:func:`calbridge.store.offload`. Here another connection holds a lock for 2 s that the
call under test needs (SQLite: an exclusive lock, which stops readers too; PostgreSQL:
``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`` on every table) while a ticker coroutine
measures how late the event loop wakes it: the call waits, the loop does not. A static
scan keeps it that way for code not exercised here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa

import calbridge
from calbridge._budget import call_priority
from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.migration import Migrator
from calbridge.models import EventDraft, EventTime, TimeRange
from calbridge.store import create_engine, generate_key
from calbridge.store.testing import db_url, engine, fresh_postgres_url
from calbridge.sync import drain
from calbridge.testing import MemoryProvider, fresh_plugin_host, memory_plugin
from tests._async_scan import scan_file, scan_tree
from tests.sync.support import _memory_push, draft_event

__all__ = ["db_url", "engine", "fresh_postgres_url"]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
HOLD = 2.0  #: seconds the other connection holds its lock
MAX_LAG = 0.050  #: the loop may be this late, at most, while a call waits
TICK = 0.005

# -- the lock held by another connection ------------------------------------------------


def _hold_sqlite(path: str, acquired: threading.Event, seconds: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        # WAL readers are not stopped by BEGIN IMMEDIATE; an exclusive locking mode stops
        # readers and writers alike (it needs the other connections closed to start)
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        acquired.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _hold_postgres(url: str, acquired: threading.Event, seconds: float) -> None:
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.begin() as conn:
            tables = conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
            names = ", ".join(f'"{name}"' for name in tables)
            conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
            acquired.set()
            time.sleep(seconds)
    finally:
        eng.dispose()


@contextmanager
def locked(url: str, engine: sa.Engine, seconds: float = HOLD) -> Iterator[None]:
    """Another connection holds a lock on the whole database for ``seconds`` (``engine``'s
    idle pooled connections are closed first: the calls under test open new ones)."""
    engine.dispose()
    acquired = threading.Event()
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        assert path
        target: Callable[[], None] = lambda: _hold_sqlite(path, acquired, seconds)  # noqa: E731
    else:
        target = lambda: _hold_postgres(url, acquired, seconds)  # noqa: E731
    holder = threading.Thread(target=target, name="lock-holder", daemon=True)
    holder.start()
    assert acquired.wait(10), "the other connection could not take its lock"
    try:
        yield
    finally:
        holder.join(seconds + 10)


async def measured(call: Callable[[], Awaitable[T]]) -> tuple[T, float, float]:
    """``call()`` while a ticker measures the loop's lag: (result, seconds, max lag)."""
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - before - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK * 2)  # the ticker runs before the call starts
    started = time.perf_counter()
    try:
        result = await call()
    finally:
        took = time.perf_counter() - started
        stop.set()
        await task
    return result, took, worst


async def while_locked(bridge: CalBridge, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` against a locked database: it must wait, the loop must not."""
    with locked(
        bridge.runtime.engine.url.render_as_string(hide_password=False), bridge.runtime.engine
    ):
        result, took, lag = await measured(call)
    print(f"waited {took:.3f} s, max loop lag {lag * 1000:.1f} ms")  # shown with -s
    assert took > HOLD / 2, f"the call did not wait for the lock ({took:.3f} s): test is void"
    assert lag < MAX_LAG, f"the event loop stalled {lag * 1000:.0f} ms while the call waited"
    return result


# -- a bridge over the reference provider, on SQLite or PostgreSQL ------------------------


@pytest.fixture
def migrated_url(engine: sa.Engine, db_url: str) -> str:
    """A migrated database (the migrating engine keeps no connection open)."""
    engine.dispose()
    return db_url


@asynccontextmanager
async def memory_bridge(url: str, **config: Any) -> AsyncIterator[tuple[CalBridge, str]]:
    """A bridge whose user ``alice`` has a synced memory account (its id is returned)."""
    backend = calbridge.testing.MemoryBackend()
    backend.add_calendar("work", "Work")
    backend.put(draft_event("work", "e1", "one"))
    settings = BridgeConfig(
        database_url=url,
        keys=f"k1:{generate_key()}",
        public_url="http://hooks.test/calbridge",
        providers={"memory": calbridge.ProviderSettings(options={"backend": backend})},
        **config,
    )
    bridge = CalBridge(settings, host=fresh_plugin_host(memory_plugin, _memory_push))
    try:
        provider = bridge.runtime.provider("memory")
        grant = await provider.exchange_code(code="user:alice", redirect_uri="memory://cb")
        account = bridge.store.accounts.upsert_account(
            app_user_id="alice", provider="memory", provider_account_id="alice"
        )
        assert account.id is not None
        bridge.store.credentials.save_tokens(account.id, grant.tokens)
        await bridge.changes.channels.on_account_connected(account.id)
        await drain(bridge.worker(concurrency=1, poll_interval=0.01))
        yield bridge, account.id
    finally:
        await bridge.aclose()


WINDOW = TimeRange(
    start=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), end=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
)


def _draft(summary: str) -> EventDraft:
    start = dt.datetime(2026, 12, 2, 9, tzinfo=dt.UTC)
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )


async def test_bridge_read_waits_off_the_loop(migrated_url: str) -> None:
    async with memory_bridge(migrated_url) as (bridge, _):
        assert [e.id for e in await bridge.list_events("alice", "work", WINDOW)] == ["e1"]
        bridge.runtime.router.invalidate()  # the facts are read from the store again

        events = await while_locked(bridge, lambda: bridge.list_events("alice", "work", WINDOW))
        assert [e.summary for e in events] == ["one"]


async def test_bridge_write_waits_off_the_loop(migrated_url: str) -> None:
    async with memory_bridge(migrated_url) as (bridge, _):
        await bridge.create_event("alice", "work", _draft("warm-up"), key="k0")
        bridge.runtime.router.invalidate()

        event = await while_locked(
            bridge, lambda: bridge.create_event("alice", "work", _draft("two"), key="k1")
        )
        assert event.summary == "two"
        assert bridge.store.ids.get_ids("k1")["memory"].event_id == event.id
        again = await bridge.create_event("alice", "work", _draft("two"), key="k1")
        assert again.id == event.id  # the id map was written: no second event


async def test_webhook_post_waits_off_the_loop(migrated_url: str) -> None:
    async with memory_bridge(migrated_url) as (bridge, account_id):
        (record,) = [
            r
            for r in bridge.store.channels.list_channels(account_id=account_id)
            if not r.channel.id.startswith(("poll:", "pending:"))
        ]
        provider = bridge.runtime.provider("memory")
        assert isinstance(provider, MemoryProvider)
        app = bridge.webhook_app()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hooks.test") as http:

            async def post(seq: int) -> httpx.Response:
                req = provider.notification_for(record.channel, seq=seq)
                return await http.post("/memory", content=req.body, headers=dict(req.headers))

            assert (await post(1)).status_code == 202
            app.state.receiver.forget_channels()  # the channel is looked up in the store

            response = await while_locked(bridge, lambda: post(2))
            assert response.status_code == 202
            assert len(bridge.store.channels.inbox_pending()) == 2
        await app.state.receiver.aclose()


async def test_sync_round_waits_off_the_loop(migrated_url: str) -> None:
    async with memory_bridge(migrated_url) as (bridge, account_id):
        backend = bridge.runtime.provider("memory").settings.option("backend")
        backend.put(draft_event("work", "e2", "two"))
        engine = bridge.changes.engine

        result = await while_locked(bridge, lambda: engine.sync(account_id, "work"))
        assert result.skipped is None
        cached = {e.id: e.summary for e in bridge.store.events.list_events(account_id, "work")}
        assert cached == {"e1": "one", "e2": "two"}


# -- parity runs are background calls in the shared rate budget -------------------------


async def test_parity_provider_calls_are_background(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/parity.db"
    create_engine(url, upgrade=True).dispose()
    async with memory_bridge(url, target_provider="memory") as (bridge, account_id):
        # one memory account compared with itself: the parity run's reads are what matter
        bridge.runtime.update_routing("alice", data={"legacy_account_id": account_id})
        provider = bridge.runtime.provider("memory")
        seen: list[tuple[str, str]] = []
        for name in ("list_calendars", "list_events"):
            original = getattr(provider, name)

            def spying(*args: Any, _name: str = name, _fn: Any = original, **kw: Any) -> Any:
                seen.append((_name, call_priority()))
                return _fn(*args, **kw)

            setattr(provider, name, spying)

        await bridge.list_events("alice", "work", WINDOW, live=True)
        assert seen
        assert {p for _, p in seen} == {"user"}

        seen.clear()
        report = await Migrator(bridge.runtime).check_parity("alice", window=WINDOW)
        assert report.clean
        assert sorted(seen) == [
            ("list_calendars", "background"),
            ("list_calendars", "background"),
            ("list_events", "background"),
            ("list_events", "background"),
        ]
        assert call_priority() == "user"  # nothing leaks out of the run


# -- the static guard ---------------------------------------------------------------------

#: known database calls on the loop outside this change's files, each with its reason.
#: Keep it short: convert the code, then drop its line (the test fails on stale entries).
ALLOWED: dict[tuple[str, str], str] = {}


def test_no_database_call_runs_on_the_event_loop() -> None:
    found = scan_tree(ROOT, ["calbridge", "plugins"])
    keyed = {(path, what) for path, _, what in found}
    unexpected = [f"{p}:{line}: {w}" for p, line, w in found if (p, w) not in ALLOWED]
    assert not unexpected, (
        "database calls on the event loop (await calbridge.store.offload(fn, ...) "
        "instead):\n" + "\n".join(unexpected)
    )
    stale = sorted(f"{p}: {w}" for p, w in ALLOWED if (p, w) not in keyed)
    assert not stale, "allow-list entries that no longer occur (remove them):\n" + "\n".join(stale)


def test_the_scan_finds_what_it_should(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "from calbridge.store import offload, read\n"
        "class C:\n"
        "    def _helper(self):\n"
        "        self.store.audit_log.audit('x')\n"
        "    def _outer(self):\n"
        "        self._helper()\n"
        "    async def bad(self, account_id):\n"
        "        self.store.ids.get_ids('k')\n"
        "        with read(self.engine) as conn: ...\n"
        "        self.runtime.queue.enqueue('sync', {})\n"
        "        self._outer()\n"
        "        self.runtime.session(account_id)\n"
        "        await asyncio.to_thread(self.store.ids.get_ids, 'k')\n"
        "        self.runtime.router.route('u')\n"
        "        self.runtime.store.events.calendar_ids('a')\n"
        "    async def good(self, account):\n"
        "        await offload(self.store.ids.get_ids, 'k')\n"
        "        await offload(self.runtime.store.events.calendar_ids, 'a')\n"
        "        await offload(self._outer)\n"
        "        await self._db(self.queue.release, 1)\n"
        "        self.runtime.session(account)\n"
        "        await queue.put(1)\n"
        "        def later(): self.store.audit_log.audit('y')\n"
        "        await offload(lambda: self.store.audit_log.audit('z'))\n"
    )
    lines = [line for _, line, _ in scan_file(source)]
    assert lines == [8, 9, 10, 11, 12, 13, 14, 15]
