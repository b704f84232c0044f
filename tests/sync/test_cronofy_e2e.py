"""The pipeline end to end against the Cronofy sandbox over loopback HTTP (W5, S3, S6, S7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx
from calbridge_cronofy.sandbox import engine_for

from calbridge import AccountStatus
from tests.sync.cronofy_support import CLIENT_SECRET, cronofy_env


def _sign(body: bytes, secret: str = CLIENT_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def test_native_change_is_pushed_synced_and_delivered(migrated_url: str) -> None:
    async with cronofy_env(migrated_url) as env:
        (cal,) = env.calendar_ids()
        (rec,) = [r for r in env.runtime.store.channels.list_channels() if r.health == "active"]
        assert rec.channel.id.startswith("chn_")
        env.insert("dentist")
        await env.advance(5)  # Cronofy syncs the native change and POSTs to the receiver
        await env.drain()
        assert env.cache() == env.mirror_view() == env.remote() == ["dentist"]
        stored = env.runtime.store.channels.get_channel("cronofy", rec.channel.id)
        assert stored is not None
        assert stored.last_notification_at is not None
        assert cal in env.cronofy_calendars()


async def test_cronofy_signatures_over_the_wire(sqlite_url: str) -> None:
    """W5: a genuine notification verifies alone and inside a comma list; the same JSON
    re-serialised does not (raw bytes are what is signed); an unknown channel is 4xx."""
    async with cronofy_env(sqlite_url) as env:
        (rec,) = [r for r in env.runtime.store.channels.list_channels() if r.health == "active"]
        body = json.dumps(
            {
                "notification": {"type": "change", "changes_since": "2026-01-01T00:00:00Z"},
                "channel": {
                    "channel_id": rec.channel.id,
                    "callback_url": rec.channel.callback_url,
                    "filters": {"calendar_ids": list(rec.channel.calendar_ids)},
                },
            },
            separators=(",", ":"),
        ).encode()
        url = f"{env.receiver.base_url}/cronofy"
        async with httpx.AsyncClient() as http:
            ok = await http.post(url, content=body, headers={"cronofy-hmac-sha256": _sign(body)})
            listed = await http.post(
                url,
                content=body,
                headers={"cronofy-hmac-sha256": f"{_sign(body, 'old secret')},{_sign(body)}"},
            )
            reserialised = json.dumps(json.loads(body), indent=1).encode()
            bad = await http.post(
                url, content=reserialised, headers={"cronofy-hmac-sha256": _sign(body)}
            )
            forged = await http.post(url, content=body, headers={"cronofy-hmac-sha256": "AAAA"})
            other = body.replace(rec.channel.id.encode(), b"chn_unknown")
            unknown = await http.post(
                url, content=other, headers={"cronofy-hmac-sha256": _sign(other)}
            )
        assert ok.status_code in (200, 202)
        assert listed.status_code in (200, 202)  # identical body: a duplicate, still 2xx
        assert bad.status_code == 401
        assert forged.status_code == 401
        assert unknown.status_code == 404
        assert len(env.runtime.store.channels.inbox_pending()) == 1


async def test_profile_disconnected_marks_the_account(sqlite_url: str) -> None:
    async with cronofy_env(sqlite_url) as env:
        seen: list[str] = []

        class Listener:
            import calbridge as _cb

            @_cb.hookimpl
            def account_status_changed(
                self, account: object, old_status: object, reason: str
            ) -> None:
                seen.append(reason)

        env.runtime.host.register(Listener(), name="listener")
        engine_for(env.world).disconnect_profile("alice@example.com")
        await env.advance(2)
        assert env.account.id is not None
        account = env.runtime.store.accounts.get_account(env.account.id)
        assert account is not None
        assert account.status is AccountStatus.NEEDS_REAUTH
        assert seen == ["profile_disconnected"]


async def test_closed_channel_is_recreated_and_polling_covers_the_gap(sqlite_url: str) -> None:
    """Cronofy closes a channel after 24 h of failed deliveries: the silent channel is
    found by reconciliation, polled meanwhile, and recreated."""
    async with cronofy_env(sqlite_url) as env:
        (rec,) = [r for r in env.runtime.store.channels.list_channels() if r.health == "active"]
        engine_for(env.world).channels[rec.channel.id].closed = True
        env.insert("missed")
        await env.advance(3600 * 2)
        assert env.account.id is not None
        cal = rec.channel.calendar_ids[0]
        env.runtime.queue.enqueue(
            "reconcile", {"account": env.account.id, "calendar": cal, "tick": True}
        )
        await env.drain()
        assert env.cache() == env.mirror_view() == ["missed"]
        health = {r.channel.id: r.health for r in env.runtime.store.channels.list_channels()}
        assert health[rec.channel.id] == "failing"
        assert health[f"poll:{env.account.id}"] == "polling"
        await env.service.channels.maintain()
        health = {r.channel.id: r.health for r in env.runtime.store.channels.list_channels()}
        assert list(health.values()) == ["active"]
        env.insert("after repair")
        await env.advance(5)
        await env.drain()
        assert env.cache() == env.mirror_view() == ["after repair", "missed"]


async def test_far_edge_reconciliation_catches_events_entering_the_window(
    sqlite_url: str,
) -> None:
    """No push when an event enters Cronofy's window by time passing: the far-edge read
    (days 194-201) finds it."""
    async with cronofy_env(sqlite_url) as env:
        env.insert("far away", days=203)
        await env.advance(5)
        await env.drain()
        assert env.cache() == []
        await env.advance(3 * 86400)
        assert env.account.id is not None
        cal = env.calendar_ids()[0]
        env.runtime.queue.enqueue(
            "reconcile",
            {"account": env.account.id, "calendar": cal, "tick": True, "far_edge": True},
        )
        await env.drain()
        assert env.cache() == env.mirror_view() == ["far away"]
