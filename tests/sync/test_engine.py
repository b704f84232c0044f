"""The sync engine: atomic rounds, cursor expiry, no-op resyncs, fencing, id map, delivery."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest

import calbridge
from calbridge import errors
from calbridge.jobs import LeaseLost, RetryLater
from calbridge.store import IdMapEntry
from calbridge.sync import ChangeBatch, CursorMoved
from calbridge.sync import _engine as engine_module
from tests.sync.support import Env, draft_event, memory_env, spool_files


def _seed(env: Env, n: int, prefix: str = "e") -> None:
    for i in range(n):
        env.backend.put(draft_event("work", f"{prefix}{i:03d}", f"{prefix}{i}"))


def _put_key(
    env: Env, key: str, event_id: str, ical_uid: str | None, *, with_account: bool = True
) -> None:
    """An app idempotency key in the id map, as the app's create left it."""
    env.runtime.store.ids.put_id(
        IdMapEntry(
            key=key,
            provider="memory",
            app_user_id="alice",
            account_id=env.account.id if with_account else None,
            calendar_id="work",
            event_id=event_id,
            ical_uid=ical_uid,
        )
    )


def _crash_after(env: Env, pages: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the provider fail after yielding ``pages`` pages (a crash mid-round)."""
    original = type(env.provider).changes

    async def flaky(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[calbridge.ChangePage]:
        n = 0
        async for page in original(self, *args, **kwargs):
            if n == pages:
                raise errors.Unavailable("connection reset", provider="memory")
            n += 1
            yield page

    monkeypatch.setattr(type(env.provider), "changes", flaky)


async def test_crash_mid_round_loses_and_duplicates_nothing(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S2: failing after page k of N leaves cache and cursor as they were; the rerun
    applies every change exactly once."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        env.service.engine.page_size = 5
        cursor_before = env.runtime.store.events.get_cursor(env.account.id, "work")
        _seed(env, 23)
        _crash_after(env, 2, monkeypatch)
        with pytest.raises(errors.Unavailable):
            await env.service.engine.sync(env.account.id, "work")
        assert env.runtime.store.events.get_cursor(env.account.id, "work") == cursor_before
        assert env.cache("work") == {}
        monkeypatch.undo()
        result = await env.service.engine.sync(env.account.id, "work")
        assert result.upserted == 23
        assert result.pages == 5
        await env.drain()
        assert env.cache("work") == env.remote("work") == env.mirror.view("work")
        assert len(env.mirror.batch_ids) == len(set(env.mirror.batch_ids))


async def test_expired_cursor_means_full_resync_with_deletions(migrated_url: str) -> None:
    """S3: an expired cursor -> full read; cached events gone remotely are deleted."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        _seed(env, 5)
        await env.service.engine.sync(env.account.id, "work")
        env.backend.remove("work", "e001")
        env.backend.put(draft_event("work", "e002", "changed"))
        env.runtime.store.events.set_cursor(env.account.id, "work", "not-a-cursor")
        result = await env.service.engine.sync(env.account.id, "work")
        assert result.full
        assert result.deleted == 1
        assert result.upserted == 1
        assert result.unchanged == 3
        await env.drain()
        assert env.cache("work") == env.remote("work") == env.mirror.view("work")
        cursor = env.runtime.store.events.get_cursor(env.account.id, "work")
        assert cursor is not None
        assert cursor.isdigit()


async def test_resync_without_remote_change_writes_nothing(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S4/S5: incremental and full re-syncs of an unchanged calendar write no event and
    deliver nothing; a changed etag alone refreshes the row but is not a change."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        _seed(env, 4)
        await env.service.engine.sync(env.account.id, "work")
        await env.drain()
        delivered = len(env.mirror.batch_ids)

        def blow_up(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("no write expected")

        monkeypatch.setattr(env.runtime.store.events, "upsert_events", blow_up)
        monkeypatch.setattr(env.runtime.store.events, "delete_events", blow_up)
        again = await env.service.engine.sync(env.account.id, "work")
        full = await env.service.engine.sync(env.account.id, "work", full=True)
        assert again.changed == 0
        assert full.changed == 0
        assert full.unchanged == 4
        monkeypatch.undo()
        # flaky etag: same content, new etag -> cached row refreshed, nothing delivered
        stored = env.backend.events["work"]["e000"]
        env.backend.put(stored.event)
        flaky = await env.service.engine.sync(env.account.id, "work")
        assert flaky.changed == 0
        await env.drain()
        assert len(env.mirror.batch_ids) == delivered
        cached = env.runtime.store.events.get_event(env.account.id, "work", "e000")
        assert cached is not None
        assert cached.etag == env.backend.events["work"]["e000"].event.etag


async def test_stale_lease_and_concurrent_round_write_nothing(migrated_url: str) -> None:
    """A worker that lost its lease (fencing) or lost the race (cursor CAS) commits nothing."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        queue = env.runtime.queue
        queue.enqueue("sync", {"account": env.account.id, "calendar": "work"}, coalesce_key="x")
        job = queue.claim(owner="a", kinds=["sync"], lease=10)
        assert job is not None
        env.clock.advance(11)
        assert queue.claim(owner="b", kinds=["sync"], lease=10) is not None
        _seed(env, 2)
        with pytest.raises(LeaseLost):
            await env.service.engine.sync(env.account.id, "work", job=job)
        assert env.cache("work") == {}

        original = env.service.engine._read

        account_id = env.account.id

        async def racing(*args: Any, **kwargs: Any) -> Any:
            out = await original(*args, **kwargs)
            env.runtime.store.events.set_cursor(account_id, "work", "999999")
            return out

        env.service.engine._read = racing  # type: ignore[method-assign]
        with pytest.raises(CursorMoved):
            await env.service.engine.sync(env.account.id, "work")
        assert env.cache("work") == {}


async def test_id_map_keeps_the_app_key_by_ical_uid(migrated_url: str) -> None:
    """An app-created event keeps its idempotency key when sync sees it under a new id."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        _put_key(env, "app-key-1", "tmp-id", "e001@memory")
        _seed(env, 3)
        await env.service.engine.sync(env.account.id, "work")
        entry = env.runtime.store.ids.get_ids("app-key-1")["memory"]
        assert entry.event_id == "e001"
        assert entry.ical_uid == "e001@memory"


async def test_delivery_is_at_least_once_with_stable_batch_ids(migrated_url: str) -> None:
    """A failing callback makes the delivery retry; the batch comes again with its id."""
    async with memory_env(migrated_url) as env:
        seen: list[str] = []
        fail = {"left": 1}

        async def flaky(batch: ChangeBatch) -> None:
            seen.append(batch.id)
            if fail["left"]:
                fail["left"] -= 1
                raise RuntimeError("app is down")

        env.service.on_changes(flaky)
        _seed(env, 2)
        assert env.account.id is not None
        await env.service.engine.sync(env.account.id, "work")
        await env.drain()
        env.clock.advance(120)
        await env.drain()
        assert len(seen) == 2
        assert seen[0] == seen[1]
        assert env.mirror.view("work") == env.remote("work")


async def test_hook_changes_synced(sqlite_url: str) -> None:
    """changes_synced receives every committed batch (account, calendar, events, cursor)."""
    got: list[ChangeBatch] = []

    class Listener:
        @calbridge.hookimpl
        def changes_synced(self, batch: ChangeBatch) -> None:
            got.append(batch)

    async with memory_env(sqlite_url, plugins=(Listener(),)) as env:
        env.backend.put(draft_event("work", "h1", "hooked"))
        assert env.account.id is not None
        result = await env.service.engine.sync(env.account.id, "work")
        await env.drain()
    (batch,) = got
    assert batch.id == result.batch_ids[0]
    assert batch.account_id == env.account.id
    assert batch.calendar_id == "work"
    assert [e.summary for e in batch.upserted] == ["hooked"]
    assert batch.cursor == result.cursor


async def test_paused_provider_reschedules(sqlite_url: str) -> None:
    """A paused provider (rate limit / refused credentials) reschedules instead of calling."""
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        env.runtime.store.accounts.pause_provider(
            "memory", reason="429", until=int(env.clock() + 30)
        )
        with pytest.raises(RetryLater) as info:
            await env.service.engine.sync(env.account.id, "work")
        assert 1 <= info.value.delay <= 30


async def test_fan_out_for_channels_over_all_calendars(sqlite_url: str) -> None:
    """A sync job without a calendar (a channel over every calendar) syncs each one."""
    async with memory_env(sqlite_url, calendars=("work", "home")) as env:
        assert env.account.id is not None
        env.backend.put(draft_event("home", "h1", "at home"))
        env.runtime.queue.enqueue("sync", {"account": env.account.id, "calendar": None})
        await env.drain()
        assert env.mirror.view("home") == {"h1": "at home"}


def _fresh_pages(
    env: Env, total: int, page_size: int, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Make the provider's full read yield ``total`` new events, built page by page and
    kept by nobody else (as a real provider's decoded pages are); returns the list the
    live-event counts are appended to."""
    samples: list[int] = []

    async def pages(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[calbridge.ChangePage]:
        for start in range(0, total, page_size):
            changes = tuple(
                calbridge.Change(
                    kind=calbridge.ChangeKind.UPSERTED,
                    calendar_id="work",
                    event_id=f"big{i:05d}",
                    event=draft_event("work", f"big{i:05d}", f"event {i}"),
                )
                for i in range(start, min(total, start + page_size))
            )
            last = start + page_size >= total
            yield calbridge.ChangePage(changes=changes, cursor="1" if last else None, full=True)
            del changes
        samples.append(_live_events())  # every page read, none committed yet

    monkeypatch.setattr(type(env.provider), "changes", pages)
    store = env.runtime.store
    write = store.events.upsert_events

    def counting(*args: Any, **kwargs: Any) -> int:
        samples.append(_live_events())
        return int(write(*args, **kwargs))

    monkeypatch.setattr(store.events, "upsert_events", counting)
    return samples


def _live_events() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is calbridge.Event)


@pytest.mark.parametrize("hold", [150, 10**9])
async def test_a_large_full_round_holds_a_bounded_number_of_events(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, hold: int
) -> None:
    """3,000 events in 30 pages: a round holding at most 150 changes in memory (the rest
    in its spool file) never has more than a few hundred events alive, while reading or
    while committing, and commits and delivers every event once. The same round held
    in memory (``hold`` unbounded) has all 3,000 alive: what the bound saves."""
    total = 3000
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        engine = env.service.engine
        engine.hold = hold
        engine.batch_size = 50
        monkeypatch.setattr(engine_module, "_CHUNK", 100)
        baseline = _live_events()
        files = spool_files()
        samples = _fresh_pages(env, total, 100, monkeypatch)
        result = await engine.sync(env.account.id, "work", full=True)
        peak = max(samples) - baseline
        print("PEAK", hold, peak, samples[:3])
        assert spool_files() == files  # the spool's file is gone with the round
        monkeypatch.undo()
        assert result.upserted == total
        assert result.pages == 30
        assert len(result.batch_ids) == total // 50
        assert len(samples) == 1 + total // 100  # after the read, then each chunk's write
        if hold < total:
            # a page being read, the held changes, one spilled batch read back, a chunk
            # and its upserts, one delivery batch
            assert peak <= 100 + 150 + 150 + 100 + 50, samples
        else:
            assert peak >= total, samples
        await env.drain()
        cache = env.cache("work")
        assert len(cache) == total
        assert cache["big02999"] == "event 2999"
        assert len(env.mirror.view("work")) == total
        assert len(env.mirror.batch_ids) == len(set(env.mirror.batch_ids)) == total // 50


async def test_a_crash_mid_read_frees_the_spool(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with memory_env(sqlite_url) as env:
        assert env.account.id is not None
        env.service.engine.page_size = 5
        env.service.engine.hold = 7
        _seed(env, 40)
        files = spool_files()
        _crash_after(env, 6, monkeypatch)
        with pytest.raises(errors.Unavailable):
            await env.service.engine.sync(env.account.id, "work")
        assert spool_files() == files
        assert env.cache("work") == {}
        monkeypatch.undo()
        result = await env.service.engine.sync(env.account.id, "work")
        assert result.upserted == 40
        assert env.cache("work") == env.remote("work")


@pytest.mark.parametrize("exception_first", [False, True])
async def test_a_moved_occurrence_does_not_take_its_series_key(
    migrated_url: str, exception_first: bool
) -> None:
    """A moved occurrence shares its series' iCalendar UID (Google's iCalUID): the app's
    key for the series stays on the master, whichever the round sees first."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        store = env.runtime.store
        _put_key(env, "series-key", "tmp-series", "series@memory")
        base = draft_event("work", "m1", "weekly")
        master = attrs.evolve(
            base,
            ical_uid="series@memory",
            recurrence=("RRULE:FREQ=WEEKLY",),
            series_role=calbridge.SeriesRole.MASTER,
        )
        moved = attrs.evolve(
            draft_event("work", "m1_20261208", "weekly, moved", hour=11),
            ical_uid="series@memory",
            series_role=calbridge.SeriesRole.EXCEPTION,
            recurring_event_id="m1",
        )
        for event in (moved, master) if exception_first else (master, moved):
            env.backend.put(event)
        result = await env.service.engine.sync(env.account.id, "work")
        assert result.upserted == 2
        entry = store.ids.get_ids("series-key")["memory"]
        assert entry.event_id == "m1"
        # a later round that sees the occurrence alone leaves the key where it is
        env.backend.put(attrs.evolve(moved, summary="weekly, moved again"))
        await env.service.engine.sync(env.account.id, "work")
        assert store.ids.get_ids("series-key")["memory"].event_id == "m1"


async def test_id_mapping_in_one_chunk_sees_the_writes_before_it(migrated_url: str) -> None:
    """Keys matched by id and by iCalendar UID in one chunk, each decided as if alone."""
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        store = env.runtime.store
        for key, event_id, uid in (
            ("by-id", "e000", None),
            ("by-uid", "tmp-1", "e001@memory"),
            ("ambiguous-1", "tmp-2", "e002@memory"),
            ("ambiguous-2", "tmp-3", "e002@memory"),
        ):
            _put_key(env, key, event_id, uid, with_account=False)
        _seed(env, 4)
        await env.service.engine.sync(env.account.id, "work")
        got = {k: store.ids.get_ids(k)["memory"] for k in ("by-id", "by-uid", "ambiguous-1")}
        assert got["by-id"].event_id == "e000"
        assert got["by-id"].ical_uid == "e000@memory"  # learnt from the event
        assert got["by-id"].account_id == env.account.id
        assert got["by-uid"].event_id == "e001"
        assert got["ambiguous-1"].event_id == "tmp-2"  # two keys share the UID: neither moves
