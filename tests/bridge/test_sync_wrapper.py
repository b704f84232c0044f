"""SyncCalBridge: the same API, blocking, for Django / Flask / scripts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx

from calbridge import EventDraft, EventTime, ProviderSettings, SyncCalBridge, TimeRange
from calbridge._config import BridgeConfig
from calbridge.sandbox import World, build_app
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

from .conftest import BASE, GOOGLE_ID, GOOGLE_SECRET


def test_blocking_bridge_connects_writes_reads_and_forgets(tmp_path: Path) -> None:
    """Every call blocks until done; the event reaches the native calendar and back."""
    world = World()
    world.add_application(GOOGLE_ID, GOOGLE_SECRET)
    host = fresh_plugin_host()
    app = build_app(world, dict(host.sandbox_factories()))
    config = BridgeConfig(
        database_url=f"sqlite:///{tmp_path / 'sync.db'}",
        keys=f"k1:{generate_key()}",
        providers={
            "google": ProviderSettings(
                client_id=GOOGLE_ID,
                client_secret=GOOGLE_SECRET,
                base_urls={
                    "api": f"{BASE}/google",
                    "accounts": f"{BASE}/google",
                    "oauth2": f"{BASE}/google",
                },
            )
        },
    )
    with SyncCalBridge(
        config,
        host=host,
        transport=httpx.ASGITransport(app=app),
        clock=lambda: world.clock.now().timestamp(),
    ) as bridge:
        url = bridge.connect_url("zoe", "google", login_hint="zoe@example.com")
        consent = _consent(app, url)
        account = bridge.complete_connect("google", consent)
        assert account.provider == "google"
        assert bridge.route("zoe").provider == "google"
        start = world.clock.now().replace(microsecond=0) + dt.timedelta(days=1)
        draft = EventDraft(
            summary="Sync call",
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        )
        created = bridge.create_event("zoe", "primary", draft, key="zoe-1")
        native = world.events(world.primary_calendar("zoe@example.com").id)
        assert [e.summary for e in native] == ["Sync call"]
        window = TimeRange(start=start - dt.timedelta(hours=1), end=start + dt.timedelta(days=1))
        assert [e.id for e in bridge.list_events("zoe", "primary", window, live=True)] == [
            created.id
        ]
        assert bridge.free_busy("zoe", ["primary"], window)
        bridge.delete_event("zoe", "zoe-1")
        assert world.events(world.primary_calendar("zoe@example.com").id) == []
        assert bridge.forget_user("zoe").accounts == 1
        assert bridge.accounts("zoe") == []


def _consent(app: object, url: str) -> dict[str, str]:
    """Follow the sandbox's auto-consent redirect (in-process, from a fresh loop)."""
    import asyncio

    async def go() -> dict[str, str]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:  # type: ignore[arg-type]
            answer = await http.get(url)
        return dict(parse_qsl(urlsplit(answer.headers["location"]).query))

    return asyncio.run(go())
