"""Changes reach the application through the bridge: push, polling, and exactly once
while two providers report the same native calendar during a migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from calbridge import EventTime, TimeRange, errors
from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


class AppInbox:
    """What the application received, by event identity (iCalUID)."""

    def __init__(self) -> None:
        self.batches: list[Any] = []

    async def __call__(self, batch: Any) -> None:
        self.batches.append(batch)

    def upserts(self, summary: str) -> list[Any]:
        return [e for b in self.batches for e in b.upserted if e.summary == summary]

    def deletions(self) -> list[str]:
        return [d for b in self.batches for d in b.deleted]


def native_insert(rig: BridgeRig, email: str, summary: str, hours: float = 30) -> str:
    start = (rig.world.clock.now() + dt.timedelta(hours=hours)).replace(
        minute=0, second=0, microsecond=0
    )
    cal = rig.world.primary_calendar(email).id
    event = rig.world.insert_event(
        cal,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary=summary,
    )
    return str(event.id)


@pytest.mark.parametrize("push", [True, False], ids=["push", "poll"], indirect=True)
async def test_native_change_reaches_the_app(rig: BridgeRig, push: bool) -> None:
    """A change behind the app's back arrives through a webhook (or polling) and a sync."""
    inbox = AppInbox()
    rig.bridge.on_changes(inbox)
    await rig.connect("ann", "google", "ann@example.com")
    await rig.work()
    native_insert(rig, "ann@example.com", "Board meeting")
    await rig.settle(1 if push else 301)  # deliver the push / reach the next poll
    await rig.work()
    got = inbox.upserts("Board meeting")
    assert len(got) == 1
    assert got[0].provider == "google"
    # the synced calendar is now read from the cache: Google failing does not matter
    now = rig.world.clock.now()
    window = TimeRange(start=now, end=now + dt.timedelta(days=3))
    await rig.bridge.calendars("ann")  # warm the calendar list, then break Google
    rig.world.faults.fail_next("google", 500, times=50, path_prefix="/calendar/v3/calendars")
    cached = await rig.bridge.list_events("ann", "primary", window)
    assert "Board meeting" in {e.summary for e in cached}
    with pytest.raises(errors.Unavailable):
        await rig.bridge.list_events("ann", "primary", window, live=True)


@pytest.mark.parametrize("push", [True], ids=["push"], indirect=True)
async def test_changes_during_the_switch_reach_the_app_exactly_once(rig: BridgeRig) -> None:
    """Both providers report every change of the shared native calendar; the app is told
    once, before, during and after cutover."""
    inbox = AppInbox()
    rig.bridge.on_changes(inbox)
    email = "ben@example.com"
    await rig.connect("ben", "google", email)
    await rig.connect("ben", "cronofy", email)
    await rig.work()
    migrator = Migrator(rig.bridge.runtime, clean_period=0)
    await migrator.move("ben", Phase.SHADOW)
    native_insert(rig, email, "Before")
    for _ in range(3):  # Google pushes now; Cronofy polls natively every 5 minutes
        await rig.settle(301)
        await rig.work()
    assert len(inbox.upserts("Before")) == 1
    await migrator.move("ben", Phase.DUAL)
    event_id = native_insert(rig, email, "During")
    await migrator.move("ben", Phase.CUTOVER, force=True)
    for _ in range(3):
        await rig.settle(301)
        await rig.work()
    assert len(inbox.upserts("During")) == 1
    cal = rig.world.primary_calendar(email).id
    rig.world.update_event(cal, event_id, summary="During (edited)")
    rig.world.delete_event(cal, native_insert(rig, email, "Short-lived", hours=40))
    for _ in range(3):
        await rig.settle(301)
        await rig.work()
    assert len(inbox.upserts("During (edited)")) == 1
    # the short-lived event may be seen and deleted, but never reported twice
    assert len(inbox.upserts("Short-lived")) <= 1
    assert len(inbox.deletions()) == len(set(inbox.deletions()))
