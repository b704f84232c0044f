"""The change pipeline against the Cronofy sandbox, with real HTTP both ways.

The sandbox (a world of native calendars behind Cronofy's API) and calbridge's webhook
receiver each run under uvicorn on a loopback port: calbridge's Cronofy provider calls the
sandbox over HTTP, and the sandbox POSTs signed notifications to the receiver over HTTP.
All time is the world's manual clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import attrs
from calbridge_cronofy.sandbox import create_app, engine_for

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.jobs import Worker
from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread
from calbridge.store import generate_key
from calbridge.sync import SyncService, drain
from calbridge.testing import fresh_plugin_host
from calbridge.webhooks import make_webhook_app
from tests.sync.support import Mirror

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "CronofyEnv", "cronofy_env", "sandbox_world"]

CLIENT_ID = "cats"
CLIENT_SECRET = "opposable thumbs"
REDIRECT = "http://app.example/callback"
EMAIL = "alice@example.com"


@attrs.define
class CronofyEnv:
    world: World
    sandbox: LoopbackServer
    receiver: LoopbackServer
    runtime: Runtime
    service: SyncService
    worker: Worker
    account: calbridge.Account
    mirror: Mirror
    sub: str

    @property
    def native_calendar(self) -> str:
        return self.world.primary_calendar(EMAIL).id

    async def advance(self, seconds: float) -> None:
        """Advance the world clock in the sandbox's loop (runs deliveries over HTTP)."""
        self.sandbox.call(lambda: self.world.clock.advance(seconds))

    async def drain(self) -> int:
        return await drain(self.worker)

    def calendar_ids(self) -> list[str]:
        assert self.account.id is not None
        return [
            rec.channel.calendar_ids[0]
            for rec in self.runtime.store.channels.list_channels(account_id=self.account.id)
            if rec.channel.calendar_ids
        ]

    def cache(self) -> list[str | None]:
        assert self.account.id is not None
        out: list[str | None] = []
        for cal in self.cronofy_calendars():
            out.extend(
                e.summary for e in self.runtime.store.events.list_events(self.account.id, cal)
            )
        return sorted(out, key=str)

    def mirror_view(self) -> list[str | None]:
        return sorted((e.summary for e in self.mirror.events.values()), key=str)

    def cronofy_calendars(self) -> list[str]:
        eng = engine_for(self.world)
        return [c.calendar_id for c in eng.account_calendars(eng.accounts[self.sub])]

    def remote(self) -> list[str | None]:
        """What Cronofy shows: the native events inside its sync window."""
        eng = engine_for(self.world)
        lo, hi = eng.window()
        return sorted(
            (
                e.summary
                for e in self.world.events(self.native_calendar)
                if e.start.as_utc() < hi and e.end.as_utc() > lo
            ),
            key=str,
        )

    def insert(self, summary: str, *, days: float = 1.0) -> str:
        start = self.world.clock.now() + dt.timedelta(days=days)
        event = self.world.insert_event(
            self.native_calendar,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
            summary=summary,
        )
        return event.id


@contextmanager
def sandbox_world() -> Iterator[tuple[World, LoopbackServer]]:
    world = World()
    world.add_application(CLIENT_ID, CLIENT_SECRET)
    engine_for(world).settings.rate_limits = ()
    with serve_in_thread(build_app(world, {"cronofy": create_app})) as server:
        yield world, server


@asynccontextmanager
async def cronofy_env(db_url: str, *, push: bool = True) -> AsyncIterator[CronofyEnv]:
    with sandbox_world() as (world, sandbox):
        config = BridgeConfig(
            database_url=db_url,
            keys=f"k1:{generate_key()}",
            providers={
                "cronofy": calbridge.ProviderSettings(
                    client_id=CLIENT_ID,
                    client_secret=CLIENT_SECRET,
                    base_urls={
                        "api": f"{sandbox.base_url}/cronofy",
                        "app": f"{sandbox.base_url}/cronofy",
                    },
                    options={
                        "clock": world.clock.now,
                        "rate_limiters": (),
                        "retry": calbridge.RetryPolicy(attempts=2),
                    },
                )
            },
        )
        runtime = Runtime.open(config, host=fresh_plugin_host(), clock=world.clock.timestamp)
        app = make_webhook_app(runtime)
        with serve_in_thread(app) as receiver:
            if push:
                runtime.config = attrs.evolve(config, public_url=receiver.base_url)
            service = SyncService(runtime)
            mirror = Mirror()
            service.on_changes(mirror.apply)
            worker = Worker(runtime.queue, service.handlers, lease=60.0)
            eng = engine_for(world)
            acct = eng.account_for(EMAIL)
            code = eng.issue_code(CLIENT_ID, REDIRECT, acct.sub, "")
            provider = runtime.provider("cronofy")
            grant = await provider.exchange_code(code=code, redirect_uri=REDIRECT)
            account = runtime.store.accounts.upsert_account(
                app_user_id="alice",
                provider="cronofy",
                provider_account_id=grant.provider_account_id,
            )
            assert account.id is not None
            runtime.store.credentials.save_tokens(account.id, grant.tokens)
            env = CronofyEnv(
                world, sandbox, receiver, runtime, service, worker, account, mirror, acct.sub
            )
            try:
                await service.channels.on_account_connected(account.id)
                await env.advance(1)
                await env.drain()
                yield env
            finally:
                await runtime.aclose()
