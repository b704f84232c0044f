"""The channel manager: push or poll, renewal, repair, fallback and return (S6, S7)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from calbridge import errors
from calbridge.jobs import job_schedules
from calbridge.store import read
from tests.sync.support import Env, draft_event, memory_env


def _health(env: Env) -> dict[str, str]:
    return {rec.channel.id: rec.health for rec in env.channels()}


def _schedules(env: Env, prefix: str) -> list[str]:
    with read(env.runtime.engine) as conn:
        names = conn.execute(sa.select(job_schedules.c.name)).scalars().all()
    return sorted(n for n in names if n.startswith(prefix))


async def test_connect_with_callback_url_opens_push_channels(sqlite_url: str) -> None:
    async with memory_env(sqlite_url, calendars=("work", "home")) as env:
        health = _health(env)
        assert sorted(health.values()) == ["active", "active"]
        assert len(env.backend.channels) == 2
        assert _schedules(env, "poll:") == []
        assert len(_schedules(env, "reconcile:")) == 2
        assert _schedules(env, "renew_channels") == ["renew_channels"]
        assert _schedules(env, "purge_inbox") == ["purge_inbox"]


async def test_the_inbox_purge_job_deletes_rows_past_the_retention(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Webhook inbox rows go once older than ``inbox_retention``; newer ones stay."""
    monkeypatch.setattr("calbridge.sync._service.PURGE_INBOX_BATCH", 1)  # several batches
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        assert (await env.post(env.provider.notification_for(ch, seq=1))).status_code < 300
        await env.drain()
        store = env.runtime.store
        assert len(store.channels.inbox_pending()) == 1
        retention = env.runtime.config.inbox_retention
        env.clock.advance(retention - 60)
        for seq in (2, 3):
            assert (await env.post(env.provider.notification_for(ch, seq=seq))).status_code < 300
        env.clock.advance(3600 + 120)  # the first row is past the retention, the others not
        await env.drain()
        assert len(store.channels.inbox_pending()) == 2
        env.clock.advance(retention)
        await env.drain()  # two rows past it, one per batch
        assert store.channels.inbox_pending() == []


async def test_without_callback_url_the_account_is_polled_like_push(sqlite_url: str) -> None:
    """No public URL: the polling plugin answers; polls feed the same sync job and stream."""
    async with memory_env(sqlite_url, public_url=None) as env:
        assert env.account.id is not None
        assert _health(env) == {f"poll:{env.account.id}": "polling"}
        assert env.backend.channels == {}
        assert _schedules(env, "poll:") == [f"poll:{env.account.id}:work"]
        env.backend.put(draft_event("work", "p1", "polled"))
        env.clock.advance(env.runtime.config.poll_interval + 1)
        await env.drain()
        assert env.mirror.view("work") == env.cache("work") == {"p1": "polled"}


async def test_channels_are_renewed_before_expiry(sqlite_url: str) -> None:
    """S7: with the clock past expiry minus the margin, maintenance renews the channel."""
    async with memory_env(sqlite_url) as env:
        ch = env.push_channel()
        assert ch.expires_at is not None
        env.clock.now = ch.expires_at - env.service.channels.renew_margin + 60
        counts = await env.service.channels.maintain()
        assert counts == {"renewed": 1, "failed": 0}
        renewed = env.push_channel()
        assert renewed.expires_at is not None
        assert renewed.expires_at > ch.expires_at
        assert _health(env)[renewed.id] == "active"
        # the periodic job does the same through the queue
        env.clock.now = renewed.expires_at - env.service.channels.renew_margin + 60
        await env.drain()
        assert env.push_channel().expires_at > renewed.expires_at  # type: ignore[operator]


async def test_expired_unrenewable_channel_falls_back_to_polling_then_returns(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel that cannot be renewed and expires is closed and the account polled;
    once a channel can be opened again, polling stops."""
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        ch = env.push_channel()
        assert ch.expires_at is not None

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise errors.Unavailable("provider down", provider="memory")

        monkeypatch.setattr(type(env.provider), "renew", down)
        monkeypatch.setattr(type(env.provider), "subscribe", down)
        env.clock.now = ch.expires_at + 1
        await env.service.channels.maintain()
        assert _health(env) == {ch.id: "closed", f"poll:{env.account.id}": "polling"}
        env.backend.put(draft_event("work", "x1", "while closed"))
        env.clock.advance(env.runtime.config.poll_interval + 1)
        await env.drain()
        assert env.mirror.view("work") == {"x1": "while closed"}
        monkeypatch.undo()
        await env.service.channels.maintain()
        health = _health(env)
        assert list(health.values()) == ["active"]
        assert _schedules(env, "poll:") == []


async def test_silent_channel_with_diverging_reconciliation_is_repaired(sqlite_url: str) -> None:
    """S6: notifications lost (webhooks silent) while the remote changed -> reconciliation
    converges, marks the channel failing, polls meanwhile and recreates it."""
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        ch = env.push_channel()
        env.backend.put(draft_event("work", "lost", "never notified"))
        env.clock.advance(2 * 3600)
        env.runtime.queue.enqueue(
            "reconcile", {"account": env.account.id, "calendar": "work", "tick": True}
        )
        await env.drain()
        assert env.mirror.view("work") == env.remote("work") == {"lost": "never notified"}
        health = _health(env)
        assert health[ch.id] == "failing"
        assert health[f"poll:{env.account.id}"] == "polling"
        await env.service.channels.maintain()
        health = _health(env)
        assert list(health.values()) == ["active"]
        assert env.push_channel().id != ch.id


async def test_far_edge_reconciliation_reads_only_its_window(sqlite_url: str) -> None:
    """Cronofy-style far edge: a window read upserts what entered the window, keeps the cursor."""
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        env.service.channels.rng.seed(1)
        window = env.service.channels.far_edge_window("cronofy")
        assert window is not None
        assert (window.end - window.start).days == 7
        assert env.service.channels.far_edge_window("memory") is None
        cursor = env.runtime.store.events.get_cursor(env.account.id, "work")
        env.backend.put(draft_event("work", "edge", "entered the window"))
        result = await env.service.engine.reconcile_window(env.account.id, "work", window)
        assert result.upserted == 1
        assert env.runtime.store.events.get_cursor(env.account.id, "work") == cursor


async def test_disconnect_closes_channels_and_schedules(sqlite_url: str) -> None:
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        await env.service.channels.on_account_disconnected(env.account.id)
        assert env.channels() == []
        assert env.backend.channels == {}
        assert _schedules(env, "reconcile:") == []
