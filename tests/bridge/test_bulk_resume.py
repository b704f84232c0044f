"""Bulk migrations resume after a crash by running the same command again."""

from __future__ import annotations

import pytest

from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


class Crash(Exception):
    """Stands in for the process dying part-way through a bulk run."""


async def test_bulk_move_interrupted_then_rerun_moves_everyone_once(rig: BridgeRig) -> None:
    """A run killed after two users leaves them moved; the rerun moves the rest and
    touches nobody twice (one audit line per user), and dry runs change nothing."""
    users = [f"u{i}" for i in range(5)]
    for user in users:
        await rig.connect(user, "google", f"{user}@example.com")
        await rig.connect(user, "cronofy", f"{user}@example.com")
    migrator = Migrator(rig.bridge.runtime)
    dry = await migrator.bulk(users, Phase.SHADOW, dry_run=True)
    assert sorted(dry.moved) == users
    assert all(migrator.status(u).phase is Phase.LEGACY for u in users)

    done: list[str] = []

    def progress(user: str, outcome: str) -> None:
        done.append(user)
        if len(done) == 2:
            raise Crash

    with pytest.raises(Crash):
        await migrator.bulk(users, Phase.SHADOW, progress=progress)
    assert [migrator.status(u).phase for u in users].count(Phase.SHADOW) == 2

    again = await migrator.bulk(users, Phase.SHADOW)
    assert sorted(again.already) == users[:2]
    assert sorted(again.moved) == users[2:]
    for user in users:
        entries = rig.bridge.store.audit_log.audit_entries(
            app_user_id=user, action="migration.shadow"
        )
        assert len(entries) == 1
