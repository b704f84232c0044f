"""The cutover's initial-sync guard, end to end on the Cronofy sandbox: refused while
Cronofy still syncs a new user's profile, allowed once ``profile_initial_sync_completed``
arrived (push) or a later userinfo read no longer reports ``profile_initial_sync_required``
(poll-only); ``force`` skips only the guard kinds it names."""

from __future__ import annotations

import datetime as dt

import pytest
from calbridge_cronofy.sandbox import engine_for

from calbridge import EventTime
from calbridge.migration import GuardFailed, GuardKind, Migrator
from calbridge.router import Phase

from .conftest import BridgeRig

SYNC_DELAY = 3600.0


async def dual_user_syncing(rig: BridgeRig, user: str) -> tuple[Migrator, str]:
    """A Google user with one event, re-authorised through Cronofy while Cronofy's first
    sync of the profile takes SYNC_DELAY; moved to dual. Returns the Cronofy account id."""
    engine_for(rig.world).settings.initial_sync_delay = SYNC_DELAY
    email = f"{user}@example.com"
    await rig.connect(user, "google", email)
    start = (rig.world.clock.now() + dt.timedelta(days=2)).replace(microsecond=0)
    rig.world.insert_event(
        rig.world.primary_calendar(email).id,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary="Planning",
    )
    await rig.settle(700)  # older than the parity grace period
    cronofy = await rig.connect(user, "cronofy", email)
    await rig.work()  # calbridge syncs both accounts: Cronofy's (still empty) read included
    migrator = Migrator(
        rig.bridge.runtime, clean_period=0, clock=lambda: rig.world.clock.now().timestamp()
    )
    assert await migrator.move(user, Phase.SHADOW)
    assert await migrator.move(user, Phase.DUAL)
    return migrator, cronofy


async def refused(migrator: Migrator, user: str, **kw: object) -> frozenset[GuardKind]:
    with pytest.raises(GuardFailed) as caught:
        await migrator.move(user, Phase.CUTOVER, **kw)  # type: ignore[arg-type]
    assert migrator.status(user).phase is Phase.DUAL
    return caught.value.kinds


@pytest.mark.parametrize("push", [True], ids=["push"], indirect=True)
async def test_cutover_waits_for_the_initial_sync_completed_notification(
    rig: BridgeRig,
) -> None:
    """Refused (typed INITIAL_SYNC) while Cronofy syncs, although calbridge already holds a
    sync cursor for the account; the notification reaches the account's details and the
    cutover then passes without asking Cronofy again."""
    migrator, cronofy = await dual_user_syncing(rig, "ann")
    store = rig.bridge.store

    assert not (await migrator.check_parity("ann")).clean  # Cronofy's view is still empty
    assert await refused(migrator, "ann") == {GuardKind.INITIAL_SYNC, GuardKind.PARITY}
    details = store.accounts.account_details(cronofy)
    assert details["initial_sync_required"] is True
    assert details["initial_sync_source"] == "userinfo"
    # force skips only what it names
    assert await refused(migrator, "ann", force={GuardKind.PARITY}) == {GuardKind.INITIAL_SYNC}
    assert await refused(migrator, "ann", force=["initial-sync"]) == {GuardKind.PARITY}
    with pytest.raises(ValueError, match="cannot force no-authorization"):
        await migrator.move("ann", Phase.CUTOVER, force={GuardKind.NO_AUTHORIZATION})
    # a dry run reports the same guards and records nothing
    with pytest.raises(GuardFailed):
        await migrator.move("ann", Phase.CUTOVER, dry_run=True)

    delivered = rig.forward.delivered
    await rig.settle(SYNC_DELAY)  # Cronofy finishes and pushes profile_initial_sync_completed
    assert rig.forward.delivered > delivered
    details = store.accounts.account_details(cronofy)
    assert details["initial_sync_required"] is False
    assert details["initial_sync_source"] == "notification"
    await rig.work()

    assert (await migrator.check_parity("ann")).clean
    # the stored completion suffices: userinfo failing now does not matter
    rig.world.faults.fail_next("cronofy", 500, times=50, path_prefix="/v1/userinfo")
    assert await migrator.move("ann", Phase.CUTOVER)
    assert rig.bridge.route("ann").provider == "cronofy"
    [entry] = store.audit_log.audit_entries(app_user_id="ann", action="migration.cutover")
    assert entry.detail["forced"] is False
    assert entry.detail["skipped_guards"] == []


@pytest.mark.parametrize("push", [False], ids=["poll-only"], indirect=True)
async def test_without_push_a_later_userinfo_read_allows_the_cutover(rig: BridgeRig) -> None:
    """No notification ever comes (no webhook URL): the guard asks userinfo again and
    passes once Cronofy stops reporting profile_initial_sync_required."""
    migrator, cronofy = await dual_user_syncing(rig, "bob")
    assert GuardKind.INITIAL_SYNC in await refused(migrator, "bob")
    assert rig.bridge.store.accounts.account_details(cronofy)["initial_sync_required"] is True

    await rig.settle(SYNC_DELAY)
    assert (await migrator.check_parity("bob")).clean
    assert await migrator.move("bob", Phase.CUTOVER)
    details = rig.bridge.store.accounts.account_details(cronofy)
    assert (details["initial_sync_required"], details["initial_sync_source"]) == (
        False,
        "userinfo",
    )


@pytest.mark.parametrize("push", [False], ids=["poll-only"], indirect=True)
async def test_forced_cutover_records_what_was_skipped(rig: BridgeRig) -> None:
    """force=True is the documented bare --force (parity and initial sync); the audit says
    which guards were skipped, and bulk results carry them."""
    migrator, _ = await dual_user_syncing(rig, "cy")
    result = await migrator.bulk(["cy"], Phase.CUTOVER, force=True)
    assert result.moved == ("cy",)
    assert {g.kind for g in result.forced["cy"]} == {GuardKind.INITIAL_SYNC, GuardKind.PARITY}
    assert result.as_dict()["forced"]["cy"][0].keys() == {"kind", "message"}
    [entry] = rig.bridge.store.audit_log.audit_entries(app_user_id="cy", action="migration.cutover")
    assert entry.detail["forced"] is True
    assert sorted(entry.detail["skipped_guards"]) == ["initial-sync", "parity"]


@pytest.mark.parametrize("push", [False], ids=["poll-only"], indirect=True)
async def test_bulk_refusals_carry_typed_guards(rig: BridgeRig) -> None:
    """Decisions read kinds, never reason text; --json keeps reason and adds guards."""
    await rig.connect("dee", "google", "dee@example.com")
    migrator = Migrator(rig.bridge.runtime)
    result = await migrator.bulk(["dee"], Phase.SHADOW)
    assert [g.kind for g in result.guards["dee"]] == [GuardKind.NO_AUTHORIZATION]
    [row] = result.as_dict()["refused"]
    assert row["reason"] == "the user has not authorised cronofy yet"
    assert row["guards"] == [{"kind": "no-authorization", "message": row["reason"]}]
