"""Outlook reads ask for the next page before they hand out the current one (calendarView
and delta), over real loopback HTTP."""

from __future__ import annotations

import datetime as dt

import httpx
from calbridge_outlook.testing import OutlookSandboxRig, sandbox_rig

from calbridge import EventTime, TimeRange


def _seed(rig: OutlookSandboxRig, n: int) -> TimeRange:
    base = rig.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    for i in range(n):
        start = base + dt.timedelta(hours=i)
        rig.world.insert_event(
            rig.calendar_id,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary=f"e{i}",
        )
    return TimeRange(start=base, end=base + dt.timedelta(days=2))


async def test_reads_prefetch_the_next_page() -> None:
    async with sandbox_rig(loopback=True, page_size=4, delta_page_size=4) as rig:
        window = _seed(rig, 10)
        made: list[str] = []

        async def note(request: httpx.Request) -> None:
            made.append(request.url.path)

        rig.http.event_hooks["request"].append(note)
        seen: list[tuple[int, int]] = []
        async for page in rig.provider.list_events(rig.session, rig.calendar_id, window):
            seen.append((len(page), len(made)))
        # page 1 comes out with page 2 asked for, and so on; nothing after the last
        assert seen == [(4, 2), (4, 3), (2, 3)]
        made.clear()
        sizes: list[tuple[int, int]] = []
        cursor = None
        async for delta in rig.provider.changes(rig.session, rig.calendar_id, None, window=window):
            sizes.append((len(delta.changes), len(made)))
            cursor = delta.cursor or cursor
        assert [n for n, _ in sizes] == [4, 4, 2]
        assert [m for _, m in sizes] == [2, 3, 3]
        assert cursor is not None
