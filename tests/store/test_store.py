"""The repository API on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from calbridge.errors import StoreError
from calbridge.models import (
    AccountStatus,
    Channel,
    Event,
    EventTime,
    Secret,
    TimeRange,
    TokenSet,
)
from calbridge.store import IdMapEntry, RoutingState, StaleWriteError, Store, write

UTC = dt.UTC


def _event(eid: str, day: int, *, hour: int = 9, cal: str = "c1", uid: str | None = None) -> Event:
    start = dt.datetime(2026, 3, day, hour, tzinfo=UTC)
    return Event(
        id=eid,
        calendar_id=cal,
        provider="google",
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary=f"event {eid}",
        ical_uid=uid,
    )


def test_one_app_user_holds_several_accounts(store: Store) -> None:
    g = store.accounts.upsert_account(
        app_user_id="u1", provider="google", provider_account_id="g-1"
    )
    c = store.accounts.upsert_account(
        app_user_id="u1", provider="cronofy", provider_account_id="acc_1", email="a@example.com"
    )
    again = store.accounts.upsert_account(
        app_user_id="u1", provider="google", provider_account_id="g-1", email="new@example.com"
    )
    assert again.id == g.id
    assert again.email == "new@example.com"
    assert {a.provider for a in store.accounts.list_accounts(app_user_id="u1")} == {
        "google",
        "cronofy",
    }
    assert store.accounts.list_accounts(provider="cronofy") == [c]
    assert store.accounts.list_accounts(app_user_id="other") == []
    assert g.id is not None
    assert store.accounts.delete_account(g.id)
    assert store.accounts.get_account(g.id) is None


def test_account_status_changes_once(store: Store) -> None:
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    assert a.id is not None
    changed = store.accounts.set_account_status(
        a.id, AccountStatus.NEEDS_REAUTH, reason="invalid_grant"
    )
    assert changed is not None
    account, old = changed
    assert (account.status, old) == (AccountStatus.NEEDS_REAUTH, AccountStatus.ACTIVE)
    assert store.accounts.set_account_status(a.id, AccountStatus.NEEDS_REAUTH) is None
    assert store.accounts.list_accounts(status=AccountStatus.NEEDS_REAUTH) == [account]


def test_tokens_round_trip_and_compare_and_swap(store: Store) -> None:
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    assert a.id is not None
    tokens = TokenSet(
        access_token="at1", refresh_token="rt1", expires_at=1_700_000_000, scope=("a", "b")
    )
    rec = store.credentials.save_tokens(a.id, tokens)
    assert rec.tokens == tokens
    assert isinstance(rec.tokens.expires_at, int)
    got = store.credentials.get_tokens(a.id)
    assert got is not None
    assert got.tokens.access_token.reveal() == "at1"
    # a stale guard loses
    assert (
        store.credentials.swap_tokens(
            a.id,
            expected_generation=rec.generation,
            expected_refresh_token=Secret("other"),
            new=TokenSet(access_token="x"),
        )
        is None
    )
    # a response without refresh_token keeps the stored one
    swapped = store.credentials.swap_tokens(
        a.id,
        expected_generation=rec.generation,
        expected_refresh_token=Secret("rt1"),
        new=TokenSet(access_token="at2", expires_at=1_700_003_600),
    )
    assert swapped is not None
    assert swapped.generation == rec.generation + 1
    assert swapped.tokens.refresh_token == Secret("rt1")
    assert swapped.tokens.access_token == Secret("at2")
    # the old generation cannot be swapped again
    assert (
        store.credentials.swap_tokens(
            a.id,
            expected_generation=rec.generation,
            expected_refresh_token=Secret("rt1"),
            new=TokenSet(access_token="at3"),
        )
        is None
    )
    with pytest.raises(StoreError):
        store.credentials.save_tokens("missing", tokens)


def test_refresh_lease(store: Store) -> None:
    now = [1000.0]
    store.clock = lambda: now[0]
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    assert a.id is not None
    store.credentials.save_tokens(a.id, TokenSet(access_token="at", refresh_token="rt"))
    assert store.credentials.acquire_refresh_lease(a.id, "w1", ttl_ms=5000)
    assert not store.credentials.acquire_refresh_lease(a.id, "w2", ttl_ms=5000)
    now[0] += 6  # lease expired: another owner may take it
    assert store.credentials.acquire_refresh_lease(a.id, "w2", ttl_ms=5000)
    store.credentials.release_refresh_lease(a.id, "w1")  # not the holder: no effect
    assert not store.credentials.acquire_refresh_lease(a.id, "w3", ttl_ms=5000)
    store.credentials.release_refresh_lease(a.id, "w2")
    assert store.credentials.acquire_refresh_lease(a.id, "w3", ttl_ms=5000)


def test_routing_state_compare_and_set(store: Store) -> None:
    first = store.routing.set_routing(
        RoutingState(app_user_id="u1", phase="legacy"), expected_version=0
    )
    assert first.version == 1
    second = store.routing.set_routing(
        RoutingState(app_user_id="u1", phase="dual_write", data={"since": 5}), expected_version=1
    )
    assert (second.phase, second.version, dict(second.data)) == ("dual_write", 2, {"since": 5})
    with pytest.raises(StaleWriteError):
        store.routing.set_routing(
            RoutingState(app_user_id="u1", phase="cronofy"), expected_version=1
        )
    assert store.routing.get_routing("u1") == second
    assert store.routing.get_routing("nobody") is None


def test_provider_pause(store: Store) -> None:
    assert store.accounts.provider_status("google") is None
    store.accounts.pause_provider("google", reason="invalid_client")
    status = store.accounts.provider_status("google")
    assert status is not None
    assert status.paused
    store.accounts.resume_provider("google")
    assert store.accounts.provider_status("google") is None


def test_channels_with_encrypted_secret(store: Store) -> None:
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    ch = Channel(
        provider="google",
        id="chan-1",
        callback_url="https://example.com/hooks/google",
        account_id=a.id,
        calendar_ids=("c1",),
        expires_at=2000,
        secret="s3cret",
        resource_id="res",
    )
    store.channels.save_channel(ch)
    rec = store.channels.get_channel("google", "chan-1")
    assert rec is not None
    assert rec.channel == ch
    assert rec.health == "healthy"
    assert store.channels.set_channel_health(
        "google", "chan-1", "degraded", reason="5xx", failed=True
    )
    assert store.channels.list_channels(expiring_before=2001)[0].failures == 1
    assert store.channels.list_channels(expiring_before=1999) == []
    assert store.channels.delete_channel("google", "chan-1")
    assert store.channels.get_channel("google", "chan-1") is None


def test_cursors_and_event_cache(store: Store) -> None:
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    assert a.id is not None
    assert store.events.get_cursor(a.id, "c1") is None
    store.events.set_cursor(a.id, "c1", "tok-1", full_sync=True)
    assert store.events.get_cursor(a.id, "c1") == "tok-1"
    events = [_event("e1", 1), _event("e2", 2), _event("e3", 5)]
    assert store.events.upsert_events(a.id, events) == 3
    # one statement for all rows: a repeated id in it is written twice, the last one wins
    assert (
        store.events.upsert_events(a.id, [_event("e1", 1, hour=11), _event("e1", 1, hour=10)]) == 2
    )
    assert store.events.upsert_events(a.id, []) == 0
    window = TimeRange(
        start=dt.datetime(2026, 3, 1, tzinfo=UTC), end=dt.datetime(2026, 3, 3, tzinfo=UTC)
    )
    got = store.events.list_events(a.id, "c1", window)
    assert [e.id for e in got] == ["e1", "e2"]
    assert got[0].start.as_utc().hour == 10
    assert got[1] == events[1]
    all_day = Event(
        id="d1",
        calendar_id="c1",
        provider="google",
        start=EventTime.all_day(dt.date(2026, 3, 10)),
        end=EventTime.all_day(dt.date(2026, 3, 11)),
    )
    store.events.upsert_events(a.id, [all_day])
    near = TimeRange(
        start=dt.datetime(2026, 3, 10, 20, tzinfo=UTC), end=dt.datetime(2026, 3, 10, 21, tzinfo=UTC)
    )
    assert [e.id for e in store.events.list_events(a.id, "c1", near)] == ["d1"]
    assert store.events.get_event(a.id, "c1", "d1") == all_day
    assert store.events.delete_events(a.id, "c1", ["e2", "nope"]) == 1
    assert store.events.wipe_calendar(a.id, "c1") == 3
    assert store.events.list_events(a.id, "c1") == []
    assert store.events.get_cursor(a.id, "c1") is None


def test_id_map(store: Store) -> None:
    g = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="g")
    c = store.accounts.upsert_account(app_user_id="u1", provider="cronofy", provider_account_id="c")
    store.ids.put_id(
        IdMapEntry(
            key="k1",
            provider="google",
            app_user_id="u1",
            account_id=g.id,
            calendar_id="c1",
            event_id="gev",
            ical_uid="uid-1",
        )
    )
    store.ids.put_id(
        IdMapEntry(
            key="k1",
            provider="cronofy",
            app_user_id="u1",
            account_id=c.id,
            calendar_id="cal_1",
            event_id="k1",
            ical_uid="uid-1",
        )
    )
    ids = store.ids.get_ids("k1")
    assert set(ids) == {"google", "cronofy"}
    assert ids["google"].event_id == "gev"
    assert [e.provider for e in store.ids.find_ids_by_ical_uid("uid-1")] == ["cronofy", "google"]
    assert store.ids.find_ids_by_ical_uid("uid-1", app_user_id="u2") == []
    found = store.ids.find_id_by_event("google", "gev")
    assert found is not None
    assert found.key == "k1"
    assert store.ids.delete_ids("k1") == 2


def test_inbox_dedupes_and_shares_the_transaction(store: Store) -> None:
    first = store.channels.inbox_insert(
        provider="cronofy", delivery_key="d1", kind="change", payload={"a": 1}
    )
    assert first is not None
    assert (
        store.channels.inbox_insert(
            provider="cronofy", delivery_key="d1", kind="change", payload={}
        )
        is None
    )
    assert (
        store.channels.inbox_insert(provider="google", delivery_key="d1", kind="change", payload={})
        is not None
    )

    def rolled_back() -> None:
        with write(store.engine) as conn:
            assert store.channels.inbox_insert(
                provider="cronofy", delivery_key="d2", kind="change", payload={}, conn=conn
            )
            raise RuntimeError("enqueue failed")

    with pytest.raises(RuntimeError):
        rolled_back()
    pending = store.channels.inbox_pending()
    assert [(i.provider, i.delivery_key) for i in pending] == [("cronofy", "d1"), ("google", "d1")]
    store.channels.inbox_mark_processed(first)
    assert len(store.channels.inbox_pending()) == 1
    assert store.channels.inbox_purge(processed_before=store.now() + 1) == 1


def test_inbox_purge_by_age_keeps_recent_rows(store: Store) -> None:
    """Rows received before the cut go, oldest first, processed or not; later ones stay and
    still dedupe."""
    now = [1_000_000.0]
    store.clock = lambda: now[0]
    for key in ("old-1", "old-2"):
        store.channels.inbox_insert(provider="cronofy", delivery_key=key, kind="change", payload={})
        now[0] += 1
    now[0] += 3600
    store.channels.inbox_insert(provider="cronofy", delivery_key="new", kind="change", payload={})
    assert store.channels.inbox_purge() == 0  # no cut given: nothing goes
    cut = int(now[0])
    assert store.channels.inbox_purge(received_before=cut, limit=1) == 1
    assert [i.delivery_key for i in store.channels.inbox_pending()] == ["old-2", "new"]
    assert store.channels.inbox_purge(received_before=cut, limit=5) == 1
    assert store.channels.inbox_purge(received_before=cut, limit=5) == 0
    assert [i.delivery_key for i in store.channels.inbox_pending()] == ["new"]
    assert (
        store.channels.inbox_insert(
            provider="cronofy", delivery_key="new", kind="change", payload={}
        )
        is None
    )
    # a purged key is new again: a redelivery after the retention is recorded once more
    assert (
        store.channels.inbox_insert(
            provider="cronofy", delivery_key="old-1", kind="change", payload={}
        )
        is not None
    )


def test_audit_log(store: Store) -> None:
    store.audit_log.audit("router", "route", app_user_id="u1", detail={"to": "google"})
    store.audit_log.audit("migration", "phase", app_user_id="u1", detail={"to": "dual_write"})
    store.audit_log.audit("router", "route", app_user_id="u2")
    entries = store.audit_log.audit_entries(app_user_id="u1")
    assert [e.action for e in entries] == ["phase", "route"]
    assert dict(entries[0].detail) == {"to": "dual_write"}
    assert len(store.audit_log.audit_entries(action="route")) == 2


def test_oauth_state_is_one_time(store: Store) -> None:
    now = [1000.0]
    store.clock = lambda: now[0]
    store.credentials.put_oauth_state(
        state_hash="h1",
        app_user_id="u1",
        provider="google",
        redirect_uri="https://app/cb/google",
        code_verifier=Secret("v" * 50),
        scopes=("s1",),
        expires_at=1600,
    )
    store.credentials.put_oauth_state(
        state_hash="h2",
        app_user_id="u1",
        provider="google",
        redirect_uri="https://app/cb/google",
        code_verifier=None,
        scopes=(),
        expires_at=1600,
    )
    rec = store.credentials.consume_oauth_state("h1")
    assert rec is not None
    assert rec.code_verifier == Secret("v" * 50)
    assert rec.scopes == ("s1",)
    assert store.credentials.consume_oauth_state("h1") is None  # reused
    assert store.credentials.consume_oauth_state("nope") is None
    now[0] = 1600  # expired
    assert store.credentials.consume_oauth_state("h2") is None
    assert store.credentials.purge_oauth_states(older_than=1601) == 2


def test_concurrent_connects_of_one_account_make_one_row(store: Store) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(6)

    def connect(i: int) -> str | None:
        barrier.wait()
        acc = store.accounts.upsert_account(
            app_user_id="u1", provider="google", provider_account_id="g", email=f"{i}@x.test"
        )
        return acc.id

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(connect, range(6)))
    assert len(ids) == 1
    assert len(store.accounts.list_accounts(app_user_id="u1")) == 1
