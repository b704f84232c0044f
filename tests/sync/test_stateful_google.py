"""S1 with the Google sandbox: a Hypothesis state machine over in-process ASGI transports.

calbridge's runtime talks to the Google sandbox through ``httpx.ASGITransport``; the
sandbox delivers its ``X-Goog-*`` notifications to calbridge's webhook receiver through
another one (which can hold deliveries back and replay them out of order). The channel
manager opens events.watch channels, the worker syncs by syncToken into a SQLite store.
Native creates, updates and deletes happen in the world behind the app's back;
notifications are dropped, duplicated (the world's fault plan) or held and delivered out
of order; Google's API fails now and then; workers crash holding a job, or lose their
lease mid-way and try to commit late; the clock passes channel expiry (renewal keeps push
working, or polling takes over); sync tokens are expired on demand (410, full resync).
After quiescence (no forced reconciliation: one more native change must come in through
push or polling) the event cache, and the mirror the app built from delivered batches,
equal the live events Google shows (ids and summaries).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
from calbridge_google import GoogleProvider
from calbridge_google.sandbox import create_app, google_sandbox
from calbridge_google.sandbox._app import GoogleSandbox
from calbridge_google.testing import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, sandbox_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.errors import CalbridgeError
from calbridge.jobs import LeaseLost, RetryLater, Worker
from calbridge.sandbox import World, build_app
from calbridge.store import generate_key
from calbridge.sync import SyncService, drain
from calbridge.testing import fresh_plugin_host
from calbridge.webhooks import make_webhook_app
from tests.sync.machine import SandboxSyncMachine
from tests.sync.support import Mirror

EMAIL = "alice@example.com"
REDIRECT = "https://app.example.test/oauth/google"
PUBLIC = "http://hooks.test"
SANDBOX = "http://sandbox.test/google"
#: short-lived channels (the sandbox caps events.watch), so a few clock steps pass expiry
CHANNEL_TTL = 8 * 3600
LEASE = 60.0


class HoldingTransport(httpx.AsyncBaseTransport):
    """Delivers the sandbox's webhooks to the receiver in-process, or holds them back."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.hold = 0
        self.held: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.hold > 0:
            await request.aread()
            self.hold -= 1
            self.held.append(request)
            return httpx.Response(200)  # the sandbox thinks it was delivered
        return await self.inner.handle_async_request(request)

    async def replay(self, request: httpx.Request) -> int:
        async with httpx.AsyncClient(transport=self.inner) as client:
            response = await client.post(
                str(request.url), content=request.content, headers=dict(request.headers)
            )
        return response.status_code


async def _no_sleep(seconds: float) -> None:
    return None


@attrs.define
class GoogleEnv:
    world: World
    runtime: Runtime
    service: SyncService
    worker: Worker
    account: calbridge.Account
    mirror: Mirror
    hooks: HoldingTransport
    receiver: Any

    @property
    def calendar(self) -> str:
        return self.world.primary_calendar(EMAIL).id

    @property
    def google(self) -> GoogleSandbox:
        return google_sandbox(self.world)

    async def advance(self, seconds: float) -> None:
        """Advance the world clock (runs due webhook deliveries in-process)."""
        await self.world.clock.advance(seconds)

    async def drain(self) -> int:
        return await drain(self.worker)

    def cache(self) -> dict[str, str | None]:
        assert self.account.id is not None
        return {
            e.id: e.summary
            for e in self.runtime.store.events.list_events(self.account.id, self.calendar)
        }

    def remote(self) -> dict[str, str | None]:
        """What Google shows: every live event of the calendar."""
        return {e.id: e.summary for e in self.world.events(self.calendar)}

    def insert(self, summary: str, *, days: float = 1.0) -> str:
        start = self.world.clock.now() + dt.timedelta(days=days)
        return self.world.insert_event(
            self.calendar,
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
    assert consent.status_code == 302, consent.text
    code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
    return await provider.exchange_code(code=code, redirect_uri=REDIRECT, code_verifier=verifier)


@asynccontextmanager
async def google_env(db_url: str) -> AsyncIterator[GoogleEnv]:
    world = World()
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    google_sandbox(world).settings.max_channel_ttl = CHANNEL_TTL
    sandbox_app = build_app(world, {"google": create_app})
    config = BridgeConfig(
        database_url=db_url,
        keys=f"k1:{generate_key()}",
        public_url=PUBLIC,
        providers={"google": sandbox_settings(SANDBOX, page_size=3)},
    )
    runtime = Runtime.open(
        config,
        host=fresh_plugin_host(),
        transport=httpx.ASGITransport(app=sandbox_app),
        clock=world.clock.timestamp,
    )
    app = make_webhook_app(runtime)
    hooks = HoldingTransport(app)
    world.delivery.transport = hooks
    provider = runtime.provider("google")
    assert isinstance(provider, GoogleProvider)
    provider.clock = world.clock.timestamp  # channel expirations in sandbox time
    provider.google.sleep = _no_sleep  # API retries back off in no real time
    service = SyncService(runtime)
    mirror = Mirror()
    service.on_changes(mirror.apply)
    worker = Worker(runtime.queue, service.handlers, lease=LEASE)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sandbox_app)) as http:
        grant = await _connect(provider, http)
    account = runtime.store.accounts.upsert_account(
        app_user_id="alice", provider="google", provider_account_id=grant.provider_account_id
    )
    assert account.id is not None
    runtime.store.credentials.save_tokens(account.id, grant.tokens)
    env = GoogleEnv(world, runtime, service, worker, account, mirror, hooks, app.state.receiver)
    try:
        assert await service.channels.on_account_connected(account.id) == "push"
        await env.advance(1)
        await env.drain()
        yield env
    finally:
        await app.state.receiver.aclose()
        await runtime.aclose()


class GoogleSyncMachine(SandboxSyncMachine):
    fault_provider = "google"
    env: GoogleEnv

    def make_env(self, url: str) -> AbstractAsyncContextManager[Any]:
        return google_env(url)

    @rule(count=st.integers(1, 3))
    def notifications_held_back(self, count: int) -> None:
        self.env.hooks.hold += count

    @rule()
    def notifications_delivered(self) -> None:
        self.run(self.env.world.clock.run_due())

    @precondition(lambda self: bool(self.env.hooks.held))
    @rule(data=st.data())
    def held_notification_delivered_out_of_order(self, data: st.DataObject) -> None:
        held = self.env.hooks.held
        request = held.pop(data.draw(st.integers(0, len(held) - 1)))
        # a notification of a channel that was replaced meanwhile is refused (4xx)
        assert self.run(self.env.hooks.replay(request)) in (200, 202, 401, 404)

    # ------------------------------------------------------------ Google misbehaves

    @rule(times=st.integers(1, 5))
    def google_api_fails(self, times: int) -> None:
        self.env.world.faults.fail_next("google", status=503, times=times)

    @rule()
    def sync_tokens_expire(self) -> None:
        self.env.google.expire_sync_tokens()

    @rule()
    def cursor_invalidated(self) -> None:
        env = self.env
        assert env.account.id is not None
        if env.runtime.store.events.get_cursor(env.account.id, env.calendar) is not None:
            env.runtime.store.events.set_cursor(env.account.id, env.calendar, "garbage")

    # ------------------------------------------------------------ workers and time

    @rule(seconds=st.sampled_from([3.0, 60.0, 3600.0, CHANNEL_TTL + 60.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.env.advance(seconds))

    @rule()
    def sync_worker_loses_its_lease_mid_way(self) -> None:
        """A sync job's lease lapses; another worker takes over while the first one still
        reads Google and then tries to commit with its stale fencing token."""
        env = self.env
        job = env.runtime.queue.claim(owner="zombie", kinds=["sync"], lease=LEASE)
        if job is None:
            return
        self.run(env.advance(LEASE + 1))

        async def zombie() -> None:
            with contextlib.suppress(LeaseLost, RetryLater, CalbridgeError):
                await env.service.handlers["sync"](job)

        async def both() -> None:
            await asyncio.gather(zombie(), env.drain())

        self.run(both())

    # ------------------------------------------------------------ invariants

    @invariant()
    def batches_are_unique(self) -> None:
        ids = self.env.mirror.batch_ids
        assert len(ids) == len(set(ids))

    def check_converged(self) -> None:
        env = self.env
        env.world.faults.clear()
        env.hooks.hold = 0
        while env.hooks.held:
            self.run(env.hooks.replay(env.hooks.held.pop()))
        self.run(env.advance(600))
        self.run(env.drain())
        # one more native creation and deletion, notified (or polled) once faults are gone:
        # the incremental round they trigger must bring in everything missed since the
        # last sync token, deletions included
        self.live.append(env.insert("quiescence"))
        env.world.delete_event(env.calendar, self.live.pop(0))
        for _ in range(6):  # deliveries, retries, renewals and polling come due in minutes
            self.run(env.advance(300))
            self.run(env.drain())
        remote = env.remote()
        assert env.cache() == remote
        assert env.mirror.view(env.calendar) == remote


TestGoogleSync = GoogleSyncMachine.TestCase
TestGoogleSync.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
