"""Single-flight refresh (reliability.md O5, O6, O8, O9, O10, O11) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import calbridge
from calbridge.auth import ProviderPaused, StoreTokenSource
from calbridge.auth.testing import LoopbackOAuthProvider, StatusHookRecorder, TokenEndpoint
from calbridge.errors import ReauthRequired
from calbridge.models import AccountStatus, Secret, TokenSet
from calbridge.provider import Session
from calbridge.sandbox import LoopbackServer
from calbridge.store import Store

WORKER = Path(__file__).with_name("refresh_worker.py")


def _account(store: Store, endpoint: TokenEndpoint, *, expired: bool = True) -> tuple[str, str]:
    """An account holding (expired) tokens minted by the endpoint; returns (id, access)."""
    account = store.accounts.upsert_account(
        app_user_id="u1", provider="loopback", provider_account_id="r1"
    )
    assert account.id is not None
    access, refresh = endpoint.grant("r1")
    expires = int(time.time()) + (-10 if expired else 3600)
    store.credentials.save_tokens(
        account.id, TokenSet(access_token=access, refresh_token=refresh, expires_at=expires)
    )
    return account.id, access


async def test_single_flight_in_process(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    endpoint.delay = 0.2
    account_id, old = _account(store, endpoint)
    sources = [StoreTokenSource(store, provider, account_id) for _ in range(4)]
    results = await asyncio.gather(*(sources[i % 4].get() for i in range(20)))
    assert endpoint.refresh_calls == 1
    assert len({t.access_token for t in results}) == 1
    assert results[0].access_token != Secret(old)
    stored = store.credentials.get_tokens(account_id)
    assert stored is not None
    assert stored.tokens.access_token == results[0].access_token
    # the stored refresh token is the one from the response (strict rotation)
    assert stored.tokens.refresh_token is not None
    assert list(endpoint.refresh_tokens) == [stored.tokens.refresh_token.reveal()]
    assert stored.refresh_owner is None  # lease released


def test_single_flight_across_processes(
    store: Store,
    endpoint: TokenEndpoint,
    token_server: LoopbackServer,
    keys_spec: str,
) -> None:
    """Two processes x 20 coroutines holding an expired token: exactly one token request."""
    endpoint.delay = 1.0  # a wide window: both processes are waiting by then
    account_id, old = _account(store, endpoint)
    env = {
        **os.environ,
        "CALBRIDGE_KEYS": keys_spec,
        "LOOPBACK_CLIENT_SECRET": endpoint.client_secret,
    }
    url = store.engine.url.render_as_string(hide_password=False)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), url, account_id, f"{token_server.base_url}/token", "20"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:  # both set up and waiting
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # go
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert endpoint.refresh_calls == 1
    assert sum(o["calls"] for o in outputs) == 1
    tokens = {t for o in outputs for t in o["tokens"]}
    assert len(tokens) == 1
    assert tokens != {old}
    stored = store.credentials.get_tokens(account_id)
    assert stored is not None
    assert stored.tokens.access_token.reveal() in tokens
    assert stored.tokens.refresh_token is not None
    assert list(endpoint.refresh_tokens) == [stored.tokens.refresh_token.reveal()]


async def test_response_without_refresh_token_keeps_the_stored_one(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    endpoint.omit_refresh_token = True
    account_id, _ = _account(store, endpoint)
    before = store.credentials.get_tokens(account_id)
    assert before is not None
    await StoreTokenSource(store, provider, account_id).get()
    after = store.credentials.get_tokens(account_id)
    assert after is not None
    assert after.tokens.refresh_token is not None
    assert after.tokens.refresh_token == before.tokens.refresh_token
    assert after.generation == before.generation + 1
    assert isinstance(after.tokens.expires_at, int)


async def test_valid_token_is_not_refreshed(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    account_id, access = _account(store, endpoint, expired=False)
    tokens = await StoreTokenSource(store, provider, account_id).get()
    assert tokens.access_token == Secret(access)
    assert endpoint.refresh_calls == 0


async def test_forced_refresh_after_401_happens_once(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    account_id, _ = _account(store, endpoint, expired=False)
    source = StoreTokenSource(store, provider, account_id)
    session = Session(account=store.accounts.get_account(account_id), tokens=source)  # type: ignore[arg-type]
    stale = await session.access_token()
    results = await asyncio.gather(*(session.refresh(stale) for _ in range(10)))
    assert endpoint.refresh_calls == 1
    assert len({r.access_token for r in results}) == 1
    # a 401 carrying the already-replaced token does not refresh again
    await session.refresh(stale)
    assert endpoint.refresh_calls == 1


async def test_missing_expires_at_still_refreshes_proactively(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    account = store.accounts.upsert_account(
        app_user_id="u1", provider="loopback", provider_account_id="r1"
    )
    assert account.id is not None
    access, refresh = endpoint.grant("r1")
    store.credentials.save_tokens(account.id, TokenSet(access_token=access, refresh_token=refresh))
    now = [time.time()]
    source = StoreTokenSource(
        store, provider, account.id, assumed_lifetime=3600, clock=lambda: now[0]
    )
    assert (await source.get()).access_token == Secret(access)
    now[0] += 3600 - 30  # inside the leeway of the assumed expiry
    assert (await source.get()).access_token != Secret(access)
    assert endpoint.refresh_calls == 1


async def test_invalid_grant_marks_needs_reauth_once(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    hooks: tuple[calbridge.PluginHost, StatusHookRecorder],
) -> None:
    host, recorder = hooks
    account_id, _ = _account(store, endpoint)
    endpoint.refresh_tokens.clear()  # the grant was revoked: invalid_grant
    sources = [
        StoreTokenSource(store, provider, account_id, notify=host.notify_account_status_changed)
        for _ in range(4)
    ]
    results = await asyncio.gather(
        *(sources[i % 4].get() for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, ReauthRequired) for r in results)
    assert endpoint.refresh_calls == 1
    account = store.accounts.get_account(account_id)
    assert account is not None
    assert account.status is AccountStatus.NEEDS_REAUTH
    assert [(c[1], c[2]) for c in recorder.calls] == [(AccountStatus.ACTIVE, "invalid_grant")]
    with pytest.raises(ReauthRequired):
        await sources[0].get()
    assert endpoint.refresh_calls == 1
    assert [e.action for e in store.audit_log.audit_entries(account_id=account_id)] == [
        "needs_reauth"
    ]


async def test_lost_race_is_not_a_failure(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    hooks: tuple[calbridge.PluginHost, StatusHookRecorder],
) -> None:
    """B's lease starts after A's expired; A stores RT2, B gets invalid_grant with RT1."""
    host, recorder = hooks
    account_id, _ = _account(store, endpoint)
    a_called = asyncio.Event()
    b_failed = asyncio.Event()
    a_may_save = asyncio.Event()
    a_saved = asyncio.Event()
    real_refresh = provider.refresh_tokens
    calls: list[str] = []

    async def scripted(tokens: TokenSet) -> TokenSet:
        who = "A" if not calls else "B"
        calls.append(who)
        if who == "A":
            result = await real_refresh(tokens)  # RT1 -> RT2 at the endpoint
            a_called.set()
            await a_may_save.wait()
            return result
        try:
            return await real_refresh(tokens)  # RT1 is revoked now: invalid_grant
        except ReauthRequired:
            b_failed.set()
            await a_saved.wait()  # the answer reaches B after A stored RT2
            raise

    provider.refresh_tokens = scripted  # type: ignore[method-assign]
    other_store = Store(store.engine, store.vault)  # another "process": its own local lock
    a = StoreTokenSource(
        store, provider, account_id, lease_ms=50, notify=host.notify_account_status_changed
    )
    b = StoreTokenSource(
        other_store,
        provider,
        account_id,
        lease_ms=50,
        poll_interval=0.01,
        notify=host.notify_account_status_changed,
    )
    task_a = asyncio.create_task(a.get())
    await a_called.wait()
    await asyncio.sleep(0.1)  # A's lease expires while its response is "in flight"
    task_b = asyncio.create_task(b.get())
    await asyncio.wait_for(b_failed.wait(), 10)
    a_may_save.set()
    token_a = await task_a
    a_saved.set()
    token_b = await task_b
    assert calls == ["A", "B"]
    assert token_b.access_token == token_a.access_token
    account = store.accounts.get_account(account_id)
    assert account is not None
    assert account.status is AccountStatus.ACTIVE
    assert recorder.calls == []


async def test_invalid_client_pauses_the_provider_not_the_user(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    hooks: tuple[calbridge.PluginHost, StatusHookRecorder],
) -> None:
    host, recorder = hooks
    account_id, _ = _account(store, endpoint)
    endpoint.client_secret = "rotated-by-someone"
    source = StoreTokenSource(
        store, provider, account_id, notify=host.notify_account_status_changed
    )
    with pytest.raises(ProviderPaused):
        await source.get()
    assert endpoint.refresh_calls == 0  # refused before the grant was looked at
    assert len(endpoint.requests) == 1
    status = store.accounts.provider_status("loopback")
    assert status is not None
    assert status.paused
    account = store.accounts.get_account(account_id)
    assert account is not None
    assert account.status is AccountStatus.ACTIVE
    assert recorder.calls == []
    with pytest.raises(ProviderPaused):
        await source.get()
    assert len(endpoint.requests) == 1  # paused: no more requests


@pytest.mark.parametrize("rotate", [True, False], ids=["strict-rotation", "old-rt-still-valid"])
async def test_crash_after_token_response_before_commit(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    token_server: LoopbackServer,
    keys_spec: str,
    hooks: tuple[calbridge.PluginHost, StatusHookRecorder],
    rotate: bool,
) -> None:
    """O7: a worker killed between the token response and the commit leaves a consistent
    row; afterwards the old token works (Microsoft-like) or the account is needs_reauth
    (strict rotation), with no crash loop."""
    host, recorder = hooks
    endpoint.rotate = rotate
    account_id, old = _account(store, endpoint)
    before = store.credentials.get_tokens(account_id)
    assert before is not None
    env = {
        **os.environ,
        "CALBRIDGE_KEYS": keys_spec,
        "LOOPBACK_CLIENT_SECRET": endpoint.client_secret,
    }
    url = store.engine.url.render_as_string(hide_password=False)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        url,
        account_id,
        f"{token_server.base_url}/token",
        "1",
        "crash",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _out, err = await asyncio.wait_for(proc.communicate(b"go\n"), 120)
    assert proc.returncode == 137, err
    assert endpoint.refresh_calls == 1
    after_crash = store.credentials.get_tokens(account_id)
    assert after_crash is not None
    assert after_crash.generation == before.generation  # nothing half-written
    assert after_crash.tokens == before.tokens
    assert after_crash.refresh_owner is not None  # the dead worker's lease is still there
    source = StoreTokenSource(
        store, provider, account_id, poll_interval=0.05, notify=host.notify_account_status_changed
    )
    if rotate:
        with pytest.raises(ReauthRequired):
            await source.get()  # waits out the dead lease, then invalid_grant
        account = store.accounts.get_account(account_id)
        assert account is not None
        assert account.status is AccountStatus.NEEDS_REAUTH
        assert len(recorder.calls) == 1
        with pytest.raises(ReauthRequired):
            await source.get()
        assert endpoint.refresh_calls == 2  # no crash loop: no further requests
    else:
        tokens = await source.get()
        assert tokens.access_token != Secret(old)
        assert endpoint.refresh_calls == 2
        assert recorder.calls == []


def test_mark_needs_reauth_fires_once_and_survives_a_failing_hook(
    store: Store, endpoint: TokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    from calbridge.auth import mark_needs_reauth

    account_id, _ = _account(store, endpoint)
    seen: list[str] = []

    def notify(account: object, old: AccountStatus, reason: str) -> None:
        seen.append(reason)
        raise RuntimeError("plugin bug")

    assert mark_needs_reauth(store, account_id, reason="revoked", notify=notify)
    assert not mark_needs_reauth(store, account_id, reason="revoked", notify=notify)
    assert seen == ["revoked"]
    assert "hook failed" in caplog.text
