"""Long reads split into concurrent sub-window reads: every event exactly once."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import random
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest
from calbridge_cronofy import CronofyProvider
from calbridge_cronofy._shards import merge, split_window
from calbridge_cronofy.testing import sandbox_rig
from hypothesis import given
from hypothesis import strategies as st

import calbridge

UTC = dt.UTC
BASE = dt.datetime(2026, 3, 1, tzinfo=UTC)


@given(
    start=st.datetimes(
        min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    length=st.timedeltas(min_value=dt.timedelta(microseconds=1), max_value=dt.timedelta(days=900)),
    k=st.integers(min_value=1, max_value=12),
)
def test_split_window_covers_the_window_on_whole_seconds(
    start: dt.datetime, length: dt.timedelta, k: int
) -> None:
    window = calbridge.TimeRange(start=start, end=start + length)
    parts = split_window(window, k)
    assert 1 <= len(parts) <= k
    assert parts[0].start == window.start
    assert parts[-1].end == window.end
    for left, right in itertools.pairwise(parts):
        assert left.end == right.start
        assert right.start.microsecond == 0  # Cronofy's from/to carry whole seconds


async def _numbers(
    name: str, n: int, log: list[str], fail_at: int | None = None
) -> AsyncIterator[str]:
    try:
        for i in range(n):
            if i == fail_at:
                raise RuntimeError(f"{name} broke")
            await asyncio.sleep(0)
            yield f"{name}{i}"
    finally:
        log.append(f"{name} closed")


async def test_merge_keeps_each_source_in_order_and_closes_them() -> None:
    log: list[str] = []
    got = [x async for x in merge([_numbers("a", 5, log), _numbers("b", 3, log)], buffer=2)]
    assert sorted(got) == sorted(["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"])
    assert [x for x in got if x[0] == "a"] == ["a0", "a1", "a2", "a3", "a4"]
    assert [x for x in got if x[0] == "b"] == ["b0", "b1", "b2"]
    assert sorted(log) == ["a closed", "b closed"]


async def test_merge_raises_the_first_failure_and_stops_the_rest() -> None:
    log: list[str] = []
    sources = [_numbers("a", 10_000, log), _numbers("b", 10, log, fail_at=2)]
    with pytest.raises(RuntimeError, match="b broke"):
        async for _ in merge(sources, buffer=1):
            pass
    assert sorted(log) == ["a closed", "b closed"]


async def test_closing_a_merge_early_stops_its_sources() -> None:
    log: list[str] = []
    merged = merge([_numbers("a", 10_000, log), _numbers("b", 10_000, log)], buffer=1)
    async for _ in merged:
        break
    await merged.aclose()
    assert sorted(log) == ["a closed", "b closed"]


def record_froms(provider: CronofyProvider) -> list[str | None]:
    """The ``from`` parameter of every request ``provider`` sends from now on (None for
    ``next_page`` follow-ups): one value means one chain, several mean sub-window reads."""
    froms: list[str | None] = []

    async def note(request: httpx.Request) -> None:
        froms.append(request.url.params.get("from"))

    provider.http.event_hooks["request"].append(note)
    return froms


def _zoned(at: dt.datetime) -> calbridge.EventTime:
    return calbridge.EventTime.zoned(at, "UTC")


def _seed(world: object, calendar_id: str) -> None:
    """Events of every awkward shape across ten days, many of them on whole hours."""
    rng = random.Random(4)
    insert = world.insert_event  # type: ignore[attr-defined]
    for i in range(70):
        start = BASE + dt.timedelta(minutes=30 * rng.randrange(0, 10 * 48))
        minutes = rng.choice([0, 0, 15, 30, 60, 60 * 24, 60 * 24 * 3])
        insert(
            calendar_id,
            start=_zoned(start),
            end=_zoned(start + dt.timedelta(minutes=minutes)),
            summary=f"e{i}",
        )
    for day in (0, 3, 9):  # all-day events, one lasting four days
        date = (BASE + dt.timedelta(days=day)).date()
        insert(
            calendar_id,
            start=calbridge.EventTime.all_day(date),
            end=calbridge.EventTime.all_day(date + dt.timedelta(days=4 if day == 3 else 1)),
            summary=f"all-day {day}",
        )
    insert(  # started long before any window, still running
        calendar_id,
        start=_zoned(BASE - dt.timedelta(days=30)),
        end=_zoned(BASE + dt.timedelta(days=30)),
        summary="sabbatical",
    )
    insert(
        calendar_id,
        start=_zoned(BASE + dt.timedelta(hours=9)),
        end=_zoned(BASE + dt.timedelta(hours=10)),
        summary="standup",
        recurrence=("RRULE:FREQ=DAILY;COUNT=10",),
    )


@pytest.mark.parametrize("loopback", [False, True], ids=["in-process", "loopback"])
async def test_sharded_reads_return_every_event_exactly_once(loopback: bool) -> None:
    async with sandbox_rig(loopback=loopback, page_size=3, sandbox_rate_limits=()) as rig:
        _seed(rig.world, rig.native_calendar_id)
        await rig.settle()  # Cronofy picks native changes up on its own schedule
        sequential = CronofyProvider(
            http=rig.provider.http,
            settings=attrs.evolve(
                rig.provider.settings,
                options={**rig.provider.settings.options, "read_concurrency": 1},
            ),
        )
        froms = record_froms(rig.provider)
        rng = random.Random(7)
        windows = [calbridge.TimeRange(start=BASE, end=BASE + dt.timedelta(days=10))]
        for _ in range(8):
            start = BASE + dt.timedelta(
                minutes=rng.randrange(-3 * 1440, 8 * 1440), seconds=rng.randrange(60)
            )
            windows.append(
                calbridge.TimeRange(
                    start=start, end=start + dt.timedelta(minutes=rng.randrange(60, 9 * 1440))
                )
            )
        for window in windows:

            async def ids(
                provider: CronofyProvider, window: calbridge.TimeRange = window
            ) -> list[str]:
                return [
                    e.id
                    async for page in provider.list_events(rig.session, rig.calendar_id, window)
                    for e in page
                ]

            froms.clear()
            expected = await ids(sequential)
            assert [f for f in froms if f] == [froms[0]]  # one chain of pages
            froms.clear()
            got = await ids(rig.provider)
            duplicates = [i for i, n in collections.Counter(got).items() if n > 1]
            assert duplicates == []
            assert sorted(got) == sorted(expected), window
            if len(expected) >= 4 * 3:  # at least shard_min_pages pages: the read was split
                assert len({f for f in froms if f}) >= 2, window


async def test_long_reads_split_and_short_ones_and_read_concurrency_1_do_not() -> None:
    """A read of at least ``shard_min_pages`` pages is split however fast the provider
    answers (a deterministic rule: no timing decides it); a shorter one, or any read with
    ``read_concurrency=1``, is one chain of pages."""
    async with sandbox_rig(loopback=False, page_size=3, sandbox_rate_limits=()) as rig:
        _seed(rig.world, rig.native_calendar_id)
        await rig.settle()
        froms = record_froms(rig.provider)

        async def read(provider: CronofyProvider, window: calbridge.TimeRange) -> list[str]:
            froms.clear()
            return [
                e.id
                async for page in provider.list_events(rig.session, rig.calendar_id, window)
                for e in page
            ]

        chained = CronofyProvider(
            http=rig.provider.http,
            settings=attrs.evolve(
                rig.provider.settings,
                options={**rig.provider.settings.options, "read_concurrency": 1},
            ),
        )
        long = calbridge.TimeRange(start=BASE, end=BASE + dt.timedelta(days=10))
        expected = await read(chained, long)
        assert len(expected) >= 4 * 3  # shard_min_pages pages of 3
        assert [f for f in froms if f] == [froms[0]]  # one chain
        got = await read(rig.provider, long)
        assert len({f for f in froms if f}) >= 3  # split: sub-window queries
        assert sorted(got) == sorted(expected)
        assert len(got) == len(set(got))

        short = calbridge.TimeRange(start=BASE, end=BASE + dt.timedelta(hours=2))
        few = await read(rig.provider, short)
        assert 0 < len(few) < 4 * 3
        assert [f for f in froms if f] == [froms[0]]  # too short to split


async def test_a_full_change_read_is_split_like_list_events() -> None:
    async with sandbox_rig(loopback=False, page_size=3, sandbox_rate_limits=()) as rig:
        _seed(rig.world, rig.native_calendar_id)
        await rig.settle()
        window = calbridge.TimeRange(start=BASE, end=BASE + dt.timedelta(days=10))
        froms = record_froms(rig.provider)
        listed = [
            e.id
            async for page in rig.provider.list_events(rig.session, rig.calendar_id, window)
            for e in page
        ]
        froms.clear()
        pages = [
            page
            async for page in rig.provider.changes(
                rig.session, rig.calendar_id, None, window=window
            )
        ]
        assert len({f for f in froms if f}) >= 3  # split into sub-window reads
        changed = [c.event_id for page in pages for c in page.changes]
        assert sorted(changed) == sorted(listed)
        assert len(changed) == len(set(changed))
        assert all(page.full for page in pages)
        assert all(c.kind is calbridge.ChangeKind.UPSERTED for page in pages for c in page.changes)
        assert [p.cursor is not None for p in pages] == [False] * (len(pages) - 1) + [True]


@pytest.mark.parametrize("concurrency", [4, 1], ids=["split", "one-chain"])
async def test_stopping_a_read_early_leaves_no_request_running(concurrency: int) -> None:
    async with sandbox_rig(
        loopback=False,
        page_size=3,
        sandbox_rate_limits=(),
        options={"read_concurrency": concurrency},
    ) as rig:
        _seed(rig.world, rig.native_calendar_id)
        await rig.settle()
        window = calbridge.TimeRange(start=BASE, end=BASE + dt.timedelta(days=10))
        before = asyncio.all_tasks()
        read = rig.provider.list_events(rig.session, rig.calendar_id, window)
        async for page in read:
            assert page
            break
        await read.aclose()  # type: ignore[attr-defined]
        assert asyncio.all_tasks() - before == set()  # no prefetch, no sub-window left behind
