"""The bridge end to end on the sandboxes: connect, route, write, migrate, forget."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from calbridge import EventDraft, EventTime, TimeRange, errors
from calbridge.migration import GuardFailed, Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


def draft(rig: BridgeRig, summary: str, hours: float = 26) -> EventDraft:
    start = (rig.world.clock.now() + dt.timedelta(hours=hours)).replace(
        minute=0, second=0, microsecond=0
    )
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )


def window(rig: BridgeRig) -> TimeRange:
    now = rig.world.clock.now()
    return TimeRange(start=now - dt.timedelta(days=1), end=now + dt.timedelta(days=14))


async def test_legacy_event_updated_then_deleted_through_cronofy_after_cutover(
    rig: BridgeRig,
) -> None:
    """An event created through Google before migration is updated, then deleted, through
    Cronofy after cutover; the native calendar shows one event, updated, then gone."""
    b = rig.bridge
    await rig.connect("ann", "google", "ann@example.com")
    assert b.route("ann").provider == "google"
    created = await b.create_event("ann", "primary", draft(rig, "Dentist"), key="booking-1")
    assert created.provider == "google"
    # a retry with the same key creates nothing new
    again = await b.create_event("ann", "primary", draft(rig, "Dentist"), key="booking-1")
    assert again.id == created.id
    native_cal = rig.world.primary_calendar("ann@example.com").id
    assert [e.summary for e in rig.world.events(native_cal)] == ["Dentist"]

    # the user re-authorises through Cronofy; the migration pins them to legacy meanwhile
    migrator = Migrator(b.runtime, clean_period=0, clock=lambda: rig.world.clock.now().timestamp())
    with pytest.raises(GuardFailed, match="not authorised cronofy"):
        await migrator.move("ann", Phase.SHADOW)
    await rig.connect("ann", "cronofy", "ann@example.com")
    assert await migrator.move("ann", Phase.SHADOW)
    assert b.route("ann").provider == "google"  # shadow: legacy still serves
    await rig.settle(600)  # Cronofy learns the native calendar
    report = await migrator.check_parity("ann")
    assert report.clean, report.as_dict()
    assert await migrator.move("ann", Phase.DUAL)
    assert await migrator.move("ann", Phase.CUTOVER, force=True)  # initial-sync guard only
    decision = b.route("ann")
    assert (decision.provider, decision.source) == ("cronofy", "migration")

    updated = draft(rig, "Dentist (moved)", hours=30)
    await b.update_event("ann", "booking-1", updated)
    await rig.settle(600)
    natives = rig.world.events(native_cal)
    assert [e.summary for e in natives] == ["Dentist (moved)"]
    assert natives[0].start.as_utc() == updated.start.as_utc()
    ids = b.store.ids.get_ids("booking-1")
    assert set(ids) == {"google", "cronofy"}
    assert ids["google"].ical_uid == ids["cronofy"].ical_uid

    await b.delete_event("ann", "booking-1")
    await rig.settle(600)
    assert rig.world.events(native_cal) == []
    await b.delete_event("ann", "booking-1")  # twice is fine


async def test_routing_prefers_cronofy_once_authorised_and_audits(rig: BridgeRig) -> None:
    """The seed rule: Cronofy as soon as the user has an active Cronofy authorization."""
    b = rig.bridge
    await rig.connect("bob", "google", "bob@example.com")
    assert b.route("bob").provider == "google"
    await rig.connect("bob", "cronofy", "bob@example.com")
    d = b.explain_route("bob")
    assert (d.provider, d.source) == ("cronofy", "policy:prefer-when-authorized")
    changes = b.store.audit_log.audit_entries(app_user_id="bob", action="route.changed")
    assert [e.detail["to"] for e in reversed(changes)] == ["google", "cronofy"]
    await b.pin("bob", "google")
    assert b.route("bob").provider == "google"


async def test_rollback_from_every_phase_leaves_legacy_working(rig: BridgeRig) -> None:
    """Rollback returns reads and writes to the legacy provider from any phase."""
    b = rig.bridge
    await rig.connect("cy", "google", "cy@example.com")
    await rig.connect("cy", "cronofy", "cy@example.com")
    migrator = Migrator(b.runtime, clean_period=0)
    path = [Phase.SHADOW, Phase.DUAL, Phase.CUTOVER]
    for depth in range(1, len(path) + 1):
        for phase in path[:depth]:
            await migrator.move("cy", phase, force=True)
        assert await migrator.rollback("cy")
        assert b.route("cy").provider == "google"
        key = f"after-rollback-{depth}"
        event = await b.create_event("cy", "primary", draft(rig, key), key=key)
        assert event.provider == "google"
        events = await b.list_events("cy", "primary", window(rig), live=True)
        assert key in {e.summary for e in events}


async def test_forget_user_revokes_and_purges(rig: BridgeRig) -> None:
    """GDPR: tokens revoked, accounts, id map, idempotency keys and routing purged, an audit
    line kept."""
    b = rig.bridge
    dee = await rig.connect("dee", "google", "dee@example.com")
    await b.create_event("dee", "primary", draft(rig, "x"), key="dee-1")
    report = await b.forget_user("dee")
    assert report.accounts == 1
    assert report.tokens_revoked == 1
    assert await b.accounts("dee") == []
    assert b.store.ids.get_ids("dee-1") == {}
    with pytest.raises(LookupError):
        b.route("dee")
    assert b.store.audit_log.audit_entries(app_user_id="dee", action="user.forgotten")
    from calbridge.store import read, schema

    with read(b.runtime.engine) as conn:
        for table in (
            schema.event_cache,
            schema.channels,
            schema.app_feed,
            schema.idempotency_keys,
        ):
            assert conn.execute(table.select()).first() is None, table.name
        own = {"pattern": f"%:{dee}:%"}
        assert (
            conn.execute(
                sa.text("select count(*) from job_schedules where name like :pattern"), own
            ).scalar()
            == 0
        )
        assert (
            conn.execute(sa.text("select count(*) from jobs where state = 'queued'")).scalar() == 0
        )


async def test_unknown_key_and_foreign_state(rig: BridgeRig) -> None:
    """Updating an unknown key is NotFound; a forged callback never reaches the provider."""
    b = rig.bridge
    await rig.connect("eve", "google", "eve@example.com")
    with pytest.raises(errors.NotFound):
        await b.update_event("eve", "never-created", draft(rig, "x"))
    with pytest.raises(errors.InvalidStateError):
        await b.complete_connect("google", {"code": "stolen", "state": "forged"})
