"""Retirement calls the legacy provider, so it claims the user first: a second run
refuses instead of revoking again, a failed retirement releases its claim, and a crashed
run's claim expires."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from calbridge import AccountStatus, errors
from calbridge.migration import ConcurrentTransition, Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


async def at_cutover(rig: BridgeRig, user: str) -> Migrator:
    await rig.connect(user, "google", f"{user}@example.com")
    await rig.connect(user, "cronofy", f"{user}@example.com")
    migrator = Migrator(rig.bridge.runtime, clean_period=0)
    for phase in (Phase.SHADOW, Phase.DUAL, Phase.CUTOVER):
        assert await migrator.move(user, phase, force=True)
    return migrator


def legacy_status(rig: BridgeRig, user: str) -> AccountStatus:
    [google] = [
        a
        for a in rig.bridge.store.accounts.list_accounts(app_user_id=user)
        if a.provider == "google"
    ]
    return AccountStatus(google.status)


def routing_data(rig: BridgeRig, user: str) -> Mapping[str, Any]:
    routing = rig.bridge.store.routing.get_routing(user)
    assert routing is not None
    return routing.data


async def test_two_concurrent_retirements_revoke_once(rig: BridgeRig) -> None:
    first = await at_cutover(rig, "ann")
    second = Migrator(rig.bridge.runtime, clean_period=0)
    results = await asyncio.gather(
        first.move("ann", Phase.RETIRED), second.move("ann", Phase.RETIRED), return_exceptions=True
    )
    assert results.count(True) == 1, results
    [lost] = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(lost, ConcurrentTransition), repr(lost)
    assert "another run is retiring" in str(lost)
    assert first.status("ann").phase is Phase.RETIRED
    assert legacy_status(rig, "ann") is AccountStatus.REVOKED
    store = rig.bridge.store
    assert len(store.audit_log.audit_entries(app_user_id="ann", action="migration.retired")) == 1
    assert "transition" not in routing_data(rig, "ann")
    # and a rerun is idempotent
    assert await second.move("ann", Phase.RETIRED) is False


async def test_a_failed_retirement_releases_its_claim(
    rig: BridgeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrator = await at_cutover(rig, "bob")
    google = rig.bridge.runtime.provider("google")

    async def refuse(tokens: object) -> None:
        raise errors.Unavailable("revocation endpoint down", provider="google")

    monkeypatch.setattr(google, "revoke_tokens", refuse)
    with pytest.raises(errors.Unavailable):
        await migrator.move("bob", Phase.RETIRED)
    monkeypatch.undo()
    assert migrator.status("bob").phase is Phase.CUTOVER
    assert "transition" not in routing_data(rig, "bob")
    assert await migrator.move("bob", Phase.RETIRED)  # no need to wait for the claim to expire


async def test_a_crashed_runs_claim_expires(rig: BridgeRig) -> None:
    now = [1_000_000.0]
    migrator = await at_cutover(rig, "cy")
    migrator.clock = lambda: now[0]
    rig.bridge.runtime.update_routing(
        "cy", data={"transition": {"to": "retired", "token": "crashed", "at": now[0]}}
    )
    with pytest.raises(ConcurrentTransition, match="another run is retiring"):
        await migrator.move("cy", Phase.RETIRED)
    with pytest.raises(ConcurrentTransition):
        await migrator.rollback("cy")  # nor does rollback race a running retirement
    now[0] += migrator.claim_ttl + 1
    assert await migrator.move("cy", Phase.RETIRED)
    assert "transition" not in routing_data(rig, "cy")
