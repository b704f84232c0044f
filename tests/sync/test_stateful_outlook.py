"""S1 with the Graph (Outlook) sandbox: a Hypothesis state machine over real loopback HTTP.

The Graph sandbox and calbridge's webhook receiver each run under uvicorn on a loopback
port: the channel manager opens a Graph subscription (validated against the receiver), the
sandbox POSTs notifications to the receiver, and the worker syncs by delta into a SQLite
store. Native creates, updates and deletes happen in the world behind the app's back;
notifications are dropped or duplicated by the world's fault plan; workers crash holding a
job (the lease expires); the clock passes subscription expiry (renewal keeps push working,
or polling takes over); delta tokens are evicted or outlive their TTL (410, full resync).
After quiescence the event cache, and the mirror the app built from delivered batches,
equal the live events Graph shows in the synced window (ids and subjects).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
from calbridge_outlook import OutlookProvider
from calbridge_outlook.sandbox import create_app
from calbridge_outlook.testing import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, sandbox_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.jobs import Worker
from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread
from calbridge.store import generate_key
from calbridge.sync import SyncService, drain
from calbridge.testing import fresh_plugin_host
from calbridge.webhooks import make_webhook_app
from tests.sync.machine import SandboxSyncMachine
from tests.sync.support import Mirror

EMAIL = "megan@contoso.example"
REDIRECT = "https://app.example.test/oauth/outlook"
#: short-lived subscriptions and delta tokens, so that a few clock steps pass both
SUBSCRIPTION_MINUTES = 180
DELTA_TOKEN_TTL = 6 * 3600.0
#: the provider's default delta window starts 30 days back; the machine never gets near it
MAX_ELAPSED = 20 * 86400.0


@attrs.define
class OutlookEnv:
    world: World
    sandbox: LoopbackServer
    runtime: Runtime
    service: SyncService
    worker: Worker
    account: calbridge.Account
    mirror: Mirror
    started: dt.datetime

    @property
    def calendar(self) -> str:
        return self.world.primary_calendar(EMAIL).id

    @property
    def graph(self) -> Any:
        return self.world.views["graph"]

    async def advance(self, seconds: float) -> None:
        """Advance the world clock in the sandbox's loop (runs deliveries over HTTP)."""
        self.sandbox.call(lambda: self.world.clock.advance(seconds))

    async def drain(self) -> int:
        return await drain(self.worker)

    def elapsed(self) -> float:
        return (self.world.clock.now() - self.started).total_seconds()

    def cache(self) -> dict[str, str | None]:
        assert self.account.id is not None
        return {
            e.id: e.summary
            for e in self.runtime.store.events.list_events(self.account.id, self.calendar)
        }

    def mirror_view(self) -> dict[str, str | None]:
        return self.mirror.view(self.calendar)

    def remote(self) -> dict[str, str | None]:
        """What Graph shows: the live native events in the provider's default delta window."""
        now = self.world.clock.now()
        lo, hi = now - dt.timedelta(days=30), now + dt.timedelta(days=365)
        return {
            e.id: e.summary
            for e in self.world.events(self.calendar)
            if e.start.as_utc() < hi and e.end.as_utc() > lo
        }

    def insert(self, summary: str, *, days: float = 1.0) -> str:
        start = self.world.clock.now() + dt.timedelta(days=days)
        return self.world.insert_event(
            self.calendar,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
            summary=summary,
        ).id

    def evict_delta_tokens(self) -> None:
        """What ``POST /graph/_control/delta/evict`` does: every token answers 410 next."""
        view = self.graph
        with view.lock:
            for token in list(view.deltas):
                view.evicted[token] = view.deltas.pop(token)
            view.rounds.clear()


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
async def outlook_env(db_url: str) -> AsyncIterator[OutlookEnv]:
    world = World()
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    with serve_in_thread(build_app(world, {"graph": create_app})) as sandbox:
        graph = world.views["graph"]
        graph.settings.max_subscription_minutes = SUBSCRIPTION_MINUTES
        graph.settings.reauthorize_lead_minutes = 30
        graph.settings.delta_token_ttl = DELTA_TOKEN_TTL
        config = BridgeConfig(
            database_url=db_url,
            keys=f"k1:{generate_key()}",
            providers={
                "outlook": sandbox_settings(
                    f"{sandbox.base_url}/graph", max_subscription_minutes=SUBSCRIPTION_MINUTES
                )
            },
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
            env = OutlookEnv(
                world, sandbox, runtime, service, worker, account, mirror, world.clock.now()
            )
            try:
                await service.channels.on_account_connected(account.id)
                await env.advance(1)
                await env.drain()
                yield env
            finally:
                await runtime.aclose()


class OutlookSyncMachine(SandboxSyncMachine):
    fault_provider = "graph"
    env: OutlookEnv

    def make_env(self, url: str) -> AbstractAsyncContextManager[Any]:
        return outlook_env(url)

    # ------------------------------------------------------------ workers and time

    @precondition(lambda self: self.env.elapsed() < MAX_ELAPSED)
    @rule(seconds=st.sampled_from([3.0, 60.0, 3600.0, SUBSCRIPTION_MINUTES * 60.0 + 60]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.env.advance(seconds))

    @rule()
    def delta_tokens_evicted(self) -> None:
        self.env.evict_delta_tokens()

    # ------------------------------------------------------------ invariants

    @invariant()
    def batches_are_unique(self) -> None:
        ids = self.env.mirror.batch_ids
        assert len(ids) == len(set(ids))

    def check_converged(self) -> None:
        env = self.env
        env.world.faults.clear()
        self.run(env.advance(600))
        self.run(env.drain())
        # one more native change, notified (or polled) once faults are gone: the incremental
        # delta round it triggers must bring in everything missed since the last token
        self.live.append(env.insert("quiescence"))
        for _ in range(4):  # deliveries, retries and polling ticks come due within minutes
            self.run(env.advance(300))
            self.run(env.drain())
        remote = env.remote()
        assert env.cache() == remote
        assert env.mirror_view() == remote


TestOutlookSync = OutlookSyncMachine.TestCase
TestOutlookSync.settings = settings(
    max_examples=6,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
