"""An account whose authorization dies is marked, its jobs parked, the hook fired once;
reconnecting resumes it."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa

import calbridge
from calbridge import AccountStatus, errors
from calbridge.store import read, schema

from .conftest import BridgeRig


def scheduled(rig: BridgeRig, account_id: str) -> int:
    from calbridge.jobs import job_schedules, jobs

    with read(rig.bridge.runtime.engine) as conn:
        plans = conn.execute(
            sa.select(sa.func.count())
            .select_from(job_schedules)
            .where(job_schedules.c.name.like(f"%:{account_id}:%"))
        ).scalar()
        queued = conn.execute(
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.state == "queued", jobs.c.coalesce_key.like(f"%:{account_id}:%"))
        ).scalar()
    return int(plans or 0) + int(queued or 0)


def status(rig: BridgeRig, account_id: str) -> AccountStatus:
    account = rig.bridge.store.accounts.get_account(account_id)
    assert account is not None
    return account.status


async def test_invalid_grant_parks_the_account_until_it_reconnects(rig: BridgeRig) -> None:
    """Revoked at the provider: one refresh attempt, needs_reauth, hook once, jobs parked."""
    fired: list[tuple[str, str]] = []

    class Listener:
        @calbridge.hookimpl
        def account_status_changed(
            self, account: calbridge.Account, old_status: AccountStatus, reason: str
        ) -> None:
            fired.append((str(account.status), reason))

    rig.bridge.runtime.host.register(Listener(), name="reauth-listener")
    try:
        account_id = await rig.connect("ann", "google", "ann@example.com")
        await rig.work()
        assert scheduled(rig, account_id) > 0  # polling / reconciliation plans exist
        rig.world.faults.trigger("google", "revoke_tokens", "ann@example.com")
        for _ in range(2):
            with contextlib.suppress(errors.ReauthRequired):
                await rig.bridge.calendars("ann")
        assert status(rig, account_id) is AccountStatus.NEEDS_REAUTH
        assert fired == [("needs_reauth", "invalid_grant")]
        assert scheduled(rig, account_id) == 0
        with read(rig.bridge.runtime.engine) as conn:
            parked = conn.execute(
                sa.select(schema.audit_log.c.detail).where(
                    schema.audit_log.c.action == "account.parked"
                )
            ).all()
        assert len(parked) == 1

        await rig.connect("ann", "google", "ann@example.com")  # the user comes back
        assert status(rig, account_id) is AccountStatus.ACTIVE
        assert scheduled(rig, account_id) > 0
        assert await rig.bridge.calendars("ann")
    finally:
        rig.bridge.runtime.host.unregister("reauth-listener")
