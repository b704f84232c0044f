"""Series through Cronofy end to end (issue #17): occurrences keep one identity when moved,
a cancelled occurrence is a deletion under that identity, and no ghost stays cached."""

from __future__ import annotations

import datetime as dt
from typing import Any

import calbridge
from calbridge._occurrences import stamp
from tests.sync.cronofy_support import cronofy_env


async def test_moved_and_cancelled_occurrences_through_cronofy(migrated_url: str) -> None:
    async with cronofy_env(migrated_url) as env:
        batches: list[Any] = []
        env.service.on_changes(batches.append)
        now = env.world.clock.now().replace(minute=0, second=0, microsecond=0)
        first = now + dt.timedelta(days=1, hours=2)
        at = [calbridge.EventTime.zoned(first + dt.timedelta(weeks=n), "UTC") for n in range(4)]
        series = env.world.insert_event(
            env.native_calendar,
            start=at[0],
            end=calbridge.EventTime.zoned(first + dt.timedelta(hours=1), "UTC"),
            summary="standup",
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=4",),
        )
        await env.advance(5)
        await env.drain()
        uid = series.ical_uid
        told = {b.identity(e.id): stamp(e.start) for b in batches for e in b.upserted}
        assert told == {f"{uid}@{stamp(t)}": stamp(t) for t in at}

        # move the second occurrence by three hours: same identity, new start
        batches.clear()
        moved = calbridge.EventTime.zoned(first + dt.timedelta(weeks=1, hours=3), "UTC")
        env.world.change_occurrence(
            env.native_calendar,
            series.id,
            at[1],
            start=moved,
            end=calbridge.EventTime.zoned(first + dt.timedelta(weeks=1, hours=4), "UTC"),
        )
        await env.advance(5)
        await env.drain()
        upserts = [(b.identity(e.id), e) for b in batches for e in b.upserted]
        assert [(i, stamp(e.start)) for i, e in upserts] == [
            (f"{uid}@{stamp(at[1])}", stamp(moved))
        ]
        assert upserts[0][1].original_start is not None
        assert stamp(upserts[0][1].original_start) == stamp(at[1])
        assert not [d for b in batches for d in b.deleted]

        # cancel the third: a deletion of that occurrence, and nothing of it left cached
        batches.clear()
        env.world.change_occurrence(env.native_calendar, series.id, at[2], cancel=True)
        await env.advance(5)
        await env.drain()
        deleted = [b.identity(d) for b in batches for d in b.deleted]
        assert deleted == [f"{uid}@{stamp(at[2])}"]
        assert not [e for b in batches for e in b.upserted]
        assert env.account.id is not None
        (cal,) = env.cronofy_calendars()
        cached = env.runtime.store.events.list_events(env.account.id, cal)
        assert sorted(stamp(e.original_start or e.start) for e in cached) == sorted(
            stamp(t) for t in (at[0], at[1], at[3])
        )

        # delete the series: its remaining occurrences are deletions, the cache is empty
        batches.clear()
        env.world.delete_event(env.native_calendar, series.id)
        await env.advance(5)
        await env.drain()
        deleted = sorted(b.identity(d) for b in batches for d in b.deleted)
        assert deleted == sorted(f"{uid}@{stamp(t)}" for t in (at[0], at[1], at[3]))
        assert env.runtime.store.events.list_events(env.account.id, cal) == []
