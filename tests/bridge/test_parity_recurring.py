"""Parity with series read through the real plugins (issue #17): a Google series with a
moved and a cancelled occurrence is clean against Cronofy's view, which reports no
original start."""

from __future__ import annotations

import datetime as dt

from calbridge import EventTime
from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


async def test_series_with_exceptions_is_clean_through_the_plugins(rig: BridgeRig) -> None:
    b = rig.bridge
    email = "ann@example.com"
    await rig.connect("ann", "google", email)
    cal = rig.world.primary_calendar(email).id
    now = rig.world.clock.now().replace(minute=0, second=0, microsecond=0)
    first = now + dt.timedelta(days=1, hours=3)
    at = [EventTime.zoned(first + dt.timedelta(weeks=n), "UTC") for n in range(5)]
    series = rig.world.insert_event(
        cal,
        start=at[0],
        end=EventTime.zoned(first + dt.timedelta(minutes=30), "UTC"),
        summary="1:1",
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=5",),
    )
    moved = first + dt.timedelta(weeks=1, hours=2)
    rig.world.change_occurrence(
        cal,
        series.id,
        at[1],
        start=EventTime.zoned(moved, "UTC"),
        end=EventTime.zoned(moved + dt.timedelta(minutes=30), "UTC"),
    )
    rig.world.change_occurrence(cal, series.id, at[2], cancel=True)
    day = now.date() + dt.timedelta(days=3)
    rig.world.insert_event(
        cal,
        start=EventTime.all_day(day),
        end=EventTime.all_day(day + dt.timedelta(days=1)),
        summary="offsite",
    )
    await rig.connect("ann", "cronofy", email)
    migrator = Migrator(
        b.runtime, clean_period=0, grace=60, clock=lambda: rig.world.clock.now().timestamp()
    )
    assert await migrator.move("ann", Phase.SHADOW)
    await rig.settle(600)  # Cronofy learns the native calendar; changes age past the grace

    report = await migrator.check_parity("ann")
    assert report.clean, report.as_dict()
    assert report.compared == 5  # four live occurrences and the all-day event
