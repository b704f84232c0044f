"""Routing follows the migration phases: a user under migration (their routing row carries
a phase) is routed by the phase, never by prefer-when-authorized (on in this rig); users
not under migration still are."""

from __future__ import annotations

import pytest

from calbridge.migration import GuardFailed, GuardKind, Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


def route(rig: BridgeRig, user: str) -> tuple[str, str]:
    d = rig.bridge.explain_route(user)
    return d.provider, d.source


async def test_a_refused_start_holds_the_user_on_legacy_through_reauthorisation(
    rig: BridgeRig,
) -> None:
    """start refuses a user who has not authorised Cronofy but puts them under migration
    at legacy; authorising Cronofy then changes nothing until the migration moves them."""
    await rig.connect("ann", "google", "ann@example.com")
    migrator = Migrator(rig.bridge.runtime, clean_period=0)
    result = await migrator.bulk(["ann"], Phase.SHADOW)
    assert [g.kind for g in result.guards["ann"]] == [GuardKind.NO_AUTHORIZATION]
    assert migrator.status("ann").under_migration
    [entry] = rig.bridge.store.audit_log.audit_entries(
        app_user_id="ann", action="migration.enrolled"
    )
    assert entry.detail["by"] == "start"

    await rig.connect("ann", "cronofy", "ann@example.com")
    assert route(rig, "ann") == ("google", "migration")
    explained = rig.bridge.explain_route("ann").explain()
    assert "migration phase legacy" in explained
    assert "rule prefer-when-authorized would pick cronofy" in explained

    for phase, provider in [
        (Phase.SHADOW, "google"),
        (Phase.DUAL, "google"),
        (Phase.CUTOVER, "cronofy"),
    ]:
        assert await migrator.move("ann", phase, force=True)
        assert route(rig, "ann") == (provider, "migration")
    assert await migrator.rollback("ann")
    assert route(rig, "ann") == ("google", "migration")


async def test_enroll_takes_a_user_out_of_the_policy_rules(rig: BridgeRig) -> None:
    """A user not under migration follows prefer-when-authorized; enrolled, the phase
    (legacy) routes them; enrolling twice does nothing."""
    await rig.connect("bob", "google", "bob@example.com")
    await rig.connect("bob", "cronofy", "bob@example.com")
    assert route(rig, "bob") == ("cronofy", "policy:prefer-when-authorized")
    migrator = Migrator(rig.bridge.runtime)
    [row] = migrator.plan(["bob"])
    assert (row.readiness, row.under_migration) == ("ready", False)
    assert "not under migration" in row.detail
    assert not migrator.status("bob").as_dict()["under_migration"]

    dry = await migrator.enroll_many(["bob"], dry_run=True)
    assert dry.moved == ("bob",)
    assert route(rig, "bob")[1] == "policy:prefer-when-authorized"
    assert await migrator.enroll("bob")
    assert route(rig, "bob") == ("google", "migration")
    assert migrator.status("bob").as_dict()["under_migration"]
    [row] = migrator.plan(["bob"])
    assert (row.phase, row.readiness, row.detail) == (Phase.LEGACY, "ready", "")
    again = await migrator.enroll_many(["bob"])
    assert again.already == ("bob",)
    assert (
        len(
            rig.bridge.store.audit_log.audit_entries(app_user_id="bob", action="migration.enrolled")
        )
        == 1
    )


async def test_rollback_holds_a_user_the_migration_never_touched(rig: BridgeRig) -> None:
    await rig.connect("cy", "google", "cy@example.com")
    await rig.connect("cy", "cronofy", "cy@example.com")
    assert route(rig, "cy")[0] == "cronofy"
    migrator = Migrator(rig.bridge.runtime)
    assert await migrator.rollback("cy", dry_run=True)
    assert route(rig, "cy")[0] == "cronofy"
    assert await migrator.rollback("cy")
    assert route(rig, "cy") == ("google", "migration")
    assert await migrator.rollback("cy") is False


async def test_a_user_without_a_legacy_account_is_never_enrolled(rig: BridgeRig) -> None:
    await rig.connect("dee", "cronofy", "dee@example.com")
    migrator = Migrator(rig.bridge.runtime)
    with pytest.raises(GuardFailed) as caught:
        await migrator.enroll("dee")
    assert caught.value.kinds == {GuardKind.NO_LEGACY_ACCOUNT}
    assert await migrator.rollback("dee") is False
    with pytest.raises(GuardFailed):
        await migrator.move("dee", Phase.SHADOW)
    assert not migrator.status("dee").under_migration
    assert route(rig, "dee") == ("cronofy", "policy:prefer-when-authorized")
