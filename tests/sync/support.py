"""A bridge runtime over the in-memory reference provider, for the change-pipeline tests."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.jobs import Worker
from calbridge.store import create_engine, generate_key
from calbridge.sync import ChangeBatch, SyncService, drain
from calbridge.testing import MemoryBackend, MemoryProvider, fresh_plugin_host, memory_plugin
from calbridge.webhooks import make_webhook_app

__all__ = [
    "Env",
    "FakeClock",
    "Mirror",
    "draft_event",
    "fresh_sqlite_url",
    "memory_env",
    "spool_files",
]

_TEMPLATE: dict[str, Path] = {}


def fresh_sqlite_url(directory: Path) -> str:
    """A migrated SQLite database in ``directory`` (copied from a template: fast)."""
    template = _TEMPLATE.get("db")
    if template is None:
        base = Path(tempfile.mkdtemp(prefix="calbridge-template-"))
        template = base / "template.db"
        create_engine(f"sqlite:///{template}", upgrade=True).dispose()
        _TEMPLATE["db"] = template
    target = directory / f"cb-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


PUBLIC = "http://hooks.test/calbridge"


@attrs.define
class FakeClock:
    """A settable epoch clock (starts at the real time so token expiries make sense)."""

    now: float = attrs.field(factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@attrs.define
class Mirror:
    """What an application builds from the batches it receives."""

    events: dict[tuple[str, str], calbridge.Event] = attrs.field(factory=dict)
    batch_ids: list[str] = attrs.field(factory=list)

    def apply(self, batch: ChangeBatch) -> None:
        self.batch_ids.append(batch.id)
        for event in batch.upserted:
            self.events[(batch.calendar_id, event.id)] = event
        for event_id in batch.deleted:
            self.events.pop((batch.calendar_id, event_id), None)

    def view(self, calendar_id: str) -> dict[str, str | None]:
        return {eid: ev.summary for (cal, eid), ev in self.events.items() if cal == calendar_id}


@attrs.define
class Env:
    runtime: Runtime
    backend: MemoryBackend
    service: SyncService
    worker: Worker
    clock: FakeClock
    account: calbridge.Account
    app: Any
    http: httpx.AsyncClient
    mirror: Mirror

    @property
    def provider(self) -> MemoryProvider:
        p = self.runtime.provider("memory")
        assert isinstance(p, MemoryProvider)
        return p

    async def drain(self) -> int:
        return await drain(self.worker)

    def cache(self, calendar_id: str) -> dict[str, str | None]:
        assert self.account.id is not None
        return {
            e.id: e.summary
            for e in self.runtime.store.events.list_events(self.account.id, calendar_id)
        }

    def remote(self, calendar_id: str) -> dict[str, str | None]:
        return {s.event.id: s.event.summary for s in self.backend.live(calendar_id)}

    async def post(self, request: calbridge.WebhookRequest) -> httpx.Response:
        return await self.http.post("/memory", content=request.body, headers=dict(request.headers))

    def channels(self) -> list[Any]:
        return list(self.runtime.store.channels.list_channels())

    def push_channel(self, calendar_id: str = "work") -> calbridge.Channel:
        for rec in self.channels():
            ch = rec.channel
            if calendar_id in ch.calendar_ids and not ch.id.startswith(("poll:", "pending:")):
                return ch  # type: ignore[no-any-return]
        raise AssertionError("no push channel")


def draft_event(calendar_id: str, event_id: str, summary: str, hour: int = 9) -> calbridge.Event:
    start = dt.datetime(2026, 12, 1, hour, tzinfo=dt.UTC)
    return calbridge.Event(
        id=event_id,
        calendar_id=calendar_id,
        provider="memory",
        start=calbridge.EventTime.zoned(start, "UTC"),
        end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary=summary,
        ical_uid=f"{event_id}@memory",
    )


@asynccontextmanager
async def memory_env(
    db_url: str,
    *,
    public_url: str | None = PUBLIC,
    calendars: tuple[str, ...] = ("work",),
    plugins: tuple[object, ...] = (),
    connect: bool = True,
) -> AsyncIterator[Env]:
    """A runtime with one connected memory account, its service, worker and receiver."""
    backend = MemoryBackend()
    for cal in calendars:
        backend.add_calendar(cal, cal.title())
    clock = FakeClock()
    config = BridgeConfig(
        database_url=db_url,
        keys=f"k1:{generate_key()}",
        public_url=public_url,
        providers={"memory": calbridge.ProviderSettings(options={"backend": backend})},
    )
    host = fresh_plugin_host(memory_plugin, _memory_push, *plugins)
    runtime = Runtime.open(config, host=host, clock=clock)
    service = SyncService(runtime)
    mirror = Mirror()
    service.on_changes(mirror.apply)
    worker = Worker(runtime.queue, service.handlers, schedule_interval=1.0, lease=30.0)
    provider = runtime.provider("memory")
    assert isinstance(provider, MemoryProvider)
    grant = await provider.exchange_code(code="user:alice", redirect_uri="memory://cb")
    account = runtime.store.accounts.upsert_account(
        app_user_id="alice", provider="memory", provider_account_id="alice"
    )
    assert account.id is not None
    runtime.store.credentials.save_tokens(account.id, grant.tokens)
    app = make_webhook_app(runtime)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks.test")
    env = Env(runtime, backend, service, worker, clock, account, app, http, mirror)
    try:
        if connect:
            await service.channels.on_account_connected(account.id)
            await env.drain()
        yield env
    finally:
        await app.state.receiver.aclose()
        await http.aclose()
        await runtime.aclose()


class _MemoryPush:
    """The memory provider pushes when a callback URL is configured (like real plugins)."""

    @calbridge.hookimpl
    def make_change_source(
        self, provider: calbridge.Provider, callback_url: str | None
    ) -> calbridge.ChangeSource | None:
        if provider.name == "memory" and callback_url:
            return calbridge.ChangeSource(kind="push", reason="memory channels")
        return None


_memory_push = _MemoryPush()


def spool_files() -> int:
    """Open files of this process that are unlinked temporary files (a spool's file has
    no name at all: Linux's O_TMPFILE)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            count += 1
    return count
