"""A bridge wired to the in-process Google and Cronofy sandboxes on one world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import httpx
import pytest

from calbridge import ProviderSettings
from calbridge._config import BridgeConfig, RoutingConfig
from calbridge.bridge import CalBridge
from calbridge.sandbox import World, build_app
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

GOOGLE_ID, GOOGLE_SECRET = "bridge-google.apps.googleusercontent.com", "GOCSPX-bridge"
CRONOFY_ID, CRONOFY_SECRET = "bridge-cronofy", "bridge-cronofy-secret"
BASE = "http://sandbox.test"


@attrs.define
class BridgeRig:
    """A bridge, its world and an HTTP client onto the sandboxes."""

    bridge: CalBridge
    world: World
    http: httpx.AsyncClient
    worker: Any = None
    forward: Any = None

    async def connect(self, user: str, provider: str, email: str) -> str:
        """Run the real OAuth flow (the sandbox auto-consents); returns the account id."""
        url = await self.bridge.connect_url(user, provider, login_hint=email)
        answer = await self.http.get(url)
        assert answer.status_code == 302, answer.text
        params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
        account = await self.bridge.complete_connect(provider, params)
        assert account.id is not None
        return account.id

    async def settle(self, seconds: float = 0.0) -> None:
        """Advance the sandbox clock (Cronofy applies writes and polls natively)."""
        await self.world.clock.advance(seconds) if seconds else await self.world.clock.run_due()

    async def work(self) -> int:
        """Run the bridge's jobs (syncs, deliveries) until none is runnable."""
        from calbridge.sync import drain

        if self.worker is None:
            self.worker = self.bridge.worker(concurrency=1, poll_interval=0.01)
        return await drain(self.worker)


class _Forward(httpx.AsyncBaseTransport):
    """Webhook deliveries from the world to the bridge's receiver (set once it exists)."""

    def __init__(self) -> None:
        self.app: object | None = None
        self.delivered = 0
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.app is None:
            return httpx.Response(200)
        self.delivered += 1
        inner = httpx.ASGITransport(app=self.app)  # type: ignore[arg-type]
        response = await inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


@pytest.fixture(params=[False], ids=["poll-only"])
def push(request: pytest.FixtureRequest) -> bool:
    """Whether the bridge has a public webhook URL (overridden by push tests)."""
    return bool(request.param)


@pytest.fixture
async def rig(tmp_path: Path, push: bool) -> AsyncIterator[BridgeRig]:
    """A fresh world, both sandboxes in-process, a bridge on a temporary SQLite store."""
    forward = _Forward()
    world = World(transport=forward)
    world.add_application(GOOGLE_ID, GOOGLE_SECRET)
    world.add_application(CRONOFY_ID, CRONOFY_SECRET)
    host = fresh_plugin_host()
    app = build_app(world, dict(host.sandbox_factories()))
    transport = httpx.ASGITransport(app=app)
    config = BridgeConfig(
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        keys=f"k1:{generate_key()}",
        redirect_base="http://127.0.0.1:8000/oauth",
        public_url="https://app.example.test" if push else None,
        routing=RoutingConfig(prefer_when_authorized=True),
        providers={
            "google": ProviderSettings(
                client_id=GOOGLE_ID,
                client_secret=GOOGLE_SECRET,
                base_urls={
                    "api": f"{BASE}/google",
                    "accounts": f"{BASE}/google",
                    "oauth2": f"{BASE}/google",
                },
            ),
            "cronofy": ProviderSettings(
                client_id=CRONOFY_ID,
                client_secret=CRONOFY_SECRET,
                base_urls={"api": f"{BASE}/cronofy", "app": f"{BASE}/cronofy"},
                options={"clock": world.clock.now},
            ),
        },
    )
    bridge = CalBridge(
        config, host=host, transport=transport, clock=lambda: world.clock.now().timestamp()
    )
    forward.app = bridge.webhook_app()
    async with httpx.AsyncClient(transport=transport) as http:
        yield BridgeRig(bridge=bridge, world=world, http=http, forward=forward)
    await bridge.aclose()
