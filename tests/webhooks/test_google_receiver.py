"""W6: Google notifications through the receiver (channel token, channel and resource ids)."""

from __future__ import annotations

import httpx
import sqlalchemy as sa

import calbridge
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.jobs import jobs as jobs_table
from calbridge.store import generate_key, read, schema
from calbridge.testing import fresh_plugin_host
from calbridge.webhooks import make_webhook_app

TOKEN = "per-channel-secret-token"


def _headers(**over: str) -> dict[str, str]:
    base = {
        "x-goog-channel-id": "gch-1",
        "x-goog-resource-id": "res-1",
        "x-goog-resource-state": "exists",
        "x-goog-message-number": "7",
        "x-goog-channel-token": TOKEN,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v}


async def test_google_channel_checks(migrated_url: str) -> None:
    config = BridgeConfig(database_url=migrated_url, keys=f"k1:{generate_key()}")
    runtime = Runtime.open(config, host=fresh_plugin_host())
    try:
        account = runtime.store.accounts.upsert_account(
            app_user_id="u", provider="google", provider_account_id="g"
        )
        runtime.store.channels.save_channel(
            calbridge.Channel(
                provider="google",
                id="gch-1",
                callback_url="https://app/hooks/google",
                account_id=account.id,
                calendar_ids=("primary",),
                secret=TOKEN,
                resource_id="res-1",
            ),
            health="active",
        )
        app = make_webhook_app(runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hooks"
        ) as http:
            refused = [
                _headers(**{"x-goog-channel-token": ""}),
                _headers(**{"x-goog-channel-token": "wrong"}),
                _headers(**{"x-goog-channel-id": "unknown"}),
                _headers(**{"x-goog-resource-id": "other"}),
                _headers(**{"x-goog-message-number": "seven"}),
                _headers(**{"x-goog-resource-state": ""}),
            ]
            for headers in refused:
                r = await http.post("/google", headers=headers)
                assert 400 <= r.status_code < 500, headers
            assert _count(runtime) == (0, 0)
            sync_msg = await http.post(
                "/google",
                headers=_headers(**{"x-goog-resource-state": "sync", "x-goog-message-number": "1"}),
            )
            assert sync_msg.status_code == 200
            assert _count(runtime) == (0, 0)
            ok = await http.post("/google", headers=_headers())
            again = await http.post("/google", headers=_headers())
            assert ok.status_code == again.status_code == 200
            assert _count(runtime) == (1, 1)
        await app.state.receiver.aclose()
    finally:
        await runtime.aclose()


def _count(runtime: Runtime) -> tuple[int, int]:
    with read(runtime.engine) as conn:
        inbox = conn.execute(sa.select(sa.func.count()).select_from(schema.webhook_inbox)).scalar()
        jobs = conn.execute(
            sa.select(sa.func.count()).select_from(jobs_table).where(jobs_table.c.kind == "sync")
        ).scalar()
    return int(inbox or 0), int(jobs or 0)
