"""calbridge's change pipeline serves Outlook as it serves the others: the channel manager
opens a Graph subscription (validated against calbridge's webhook receiver over real
HTTP), the Graph sandbox POSTs notifications to the receiver, the worker syncs by delta
into the store, and lifecycle events renew, recreate or resync."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
from calbridge_outlook import OutlookProvider
from calbridge_outlook.sandbox import create_app
from calbridge_outlook.testing import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, sandbox_settings

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.jobs import Worker
from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread
from calbridge.store import generate_key
from calbridge.sync import SyncService, drain
from calbridge.testing import fresh_plugin_host
from calbridge.webhooks import make_webhook_app
from tests.sync.support import Mirror, fresh_sqlite_url

EMAIL = "megan@contoso.example"
REDIRECT = "https://app.example.test/oauth/outlook"


@attrs.define
class Env:
    world: World
    sandbox: LoopbackServer
    runtime: Runtime
    service: SyncService
    worker: Worker
    account: calbridge.Account
    mirror: Mirror

    async def advance(self, seconds: float) -> None:
        self.sandbox.call(lambda: self.world.clock.advance(seconds))

    def cache(self) -> list[str | None]:
        assert self.account.id is not None
        cal = self.world.primary_calendar(EMAIL).id
        return sorted(
            (e.summary for e in self.runtime.store.events.list_events(self.account.id, cal)),
            key=str,
        )

    def push_channels(self) -> list[calbridge.Channel]:
        return [
            r.channel
            for r in self.runtime.store.channels.list_channels()
            if r.health == "active" and not r.channel.id.startswith(("poll:", "pending:"))
        ]

    def insert(self, summary: str) -> str:
        start = self.world.clock.now() + dt.timedelta(days=1)
        return self.world.insert_event(
            self.world.primary_calendar(EMAIL).id,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
            summary=summary,
        ).id


async def _connect(provider: calbridge.Provider, http: httpx.AsyncClient) -> calbridge.TokenGrant:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    url = provider.authorization_url(
        calbridge.AuthorizationRequest(
            redirect_uri=REDIRECT,
            state="st",
            login_hint=EMAIL,
            code_challenge=challenge.rstrip("="),
        )
    )
    consent = await http.get(url)
    code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
    return await provider.exchange_code(code=code, redirect_uri=REDIRECT, code_verifier=verifier)


@asynccontextmanager
async def outlook_env(tmp: Path) -> AsyncIterator[Env]:
    world = World()
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    with serve_in_thread(build_app(world, {"graph": create_app})) as sandbox:
        settings = sandbox_settings(f"{sandbox.base_url}/graph")
        config = BridgeConfig(
            database_url=fresh_sqlite_url(tmp),
            keys=f"k1:{generate_key()}",
            providers={"outlook": settings},
        )
        runtime = Runtime.open(config, host=fresh_plugin_host(), clock=world.clock.timestamp)
        with serve_in_thread(make_webhook_app(runtime)) as receiver:
            runtime.config = attrs.evolve(config, public_url=receiver.base_url)
            provider = runtime.provider("outlook")
            assert isinstance(provider, OutlookProvider)
            provider.clock = world.clock.timestamp
            service = SyncService(runtime)
            mirror = Mirror()
            service.on_changes(mirror.apply)
            worker = Worker(runtime.queue, service.handlers, lease=60.0)
            async with httpx.AsyncClient() as http:
                grant = await _connect(provider, http)
            account = runtime.store.accounts.upsert_account(
                app_user_id="megan",
                provider="outlook",
                provider_account_id=grant.provider_account_id,
            )
            assert account.id is not None
            runtime.store.credentials.save_tokens(account.id, grant.tokens)
            env = Env(world, sandbox, runtime, service, worker, account, mirror)
            try:
                await service.channels.on_account_connected(account.id)
                await env.advance(1)
                await drain(worker)
                yield env
            finally:
                await runtime.aclose()


async def test_native_change_is_pushed_verified_and_synced(tmp_path: Path) -> None:
    async with outlook_env(tmp_path) as env:
        (channel,) = env.push_channels()
        graph = env.world.views["graph"]
        assert channel.id in graph.subscriptions
        assert channel.callback_url.endswith("/outlook")
        env.insert("dentist")
        await env.advance(2)  # the sandbox POSTs the notification to the receiver
        await drain(env.worker)
        assert env.cache() == ["dentist"]
        assert sorted((e.summary for e in env.mirror.events.values()), key=str) == ["dentist"]
        delivered = [a for a in env.world.delivery.attempts if a.url.endswith("/outlook")]
        assert delivered
        assert all(a.ok for a in delivered)


async def test_lifecycle_events_renew_resync_and_recreate(tmp_path: Path) -> None:
    async with outlook_env(tmp_path) as env:
        (channel,) = env.push_channels()
        graph = env.world.views["graph"]
        first_expiry = graph.subscriptions[channel.id].expires
        await env.advance(3600)
        async with httpx.AsyncClient() as http:
            reauth = await http.post(
                f"{env.sandbox.base_url}/graph/_control/subscriptions/{channel.id}/lifecycle",
                json={"event": "reauthorizationRequired"},
            )
            assert reauth.status_code == 204
        await env.advance(1)
        await drain(env.worker)
        (renewed,) = env.push_channels()
        assert renewed.id == channel.id  # renewed in place by PATCH
        assert graph.subscriptions[channel.id].expires > first_expiry
        env.world.faults.drop_notifications("graph", 1)
        env.insert("lost in transit")
        await env.advance(2)
        await drain(env.worker)
        assert env.cache() == []
        async with httpx.AsyncClient() as http:
            missed = await http.post(
                f"{env.sandbox.base_url}/graph/_control/subscriptions/{channel.id}/lifecycle",
                json={"event": "missed"},
            )
            assert missed.status_code == 204
            await env.advance(1)
            await drain(env.worker)
            assert env.cache() == ["lost in transit"]
            removed = await http.post(
                f"{env.sandbox.base_url}/graph/_control/subscriptions/{channel.id}/lifecycle",
                json={"event": "subscriptionRemoved"},
            )
            assert removed.status_code == 204
        await env.advance(1)
        await drain(env.worker)
        (fresh,) = env.push_channels()
        assert fresh.id != channel.id
        assert fresh.id in graph.subscriptions
        env.insert("after recreate")
        await env.advance(2)
        await drain(env.worker)
        assert env.cache() == ["after recreate", "lost in transit"]
