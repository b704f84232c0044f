"""Typed migration guards: what force may skip, the CLI's --force, and how observations of
the target's initial sync are stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from calbridge.cli import main
from calbridge.cli._migrate import FORCE_ALL, FORCE_NAMES, _force_kinds
from calbridge.migration import (
    BARE_FORCE,
    FORCEABLE,
    GuardFailed,
    GuardKind,
    force_set,
    record_initial_sync,
)
from calbridge.migration._guards import Guard
from calbridge.router import Phase
from calbridge.store import Store, create_engine, write


def test_force_names_only_forceable_kinds() -> None:
    """True is the documented bare force; lists name kinds; other kinds are refused."""
    assert force_set(True) == BARE_FORCE == FORCEABLE
    assert force_set(False) == force_set(None) == force_set(()) == frozenset()
    assert force_set(["parity"]) == {GuardKind.PARITY}
    assert force_set({GuardKind.INITIAL_SYNC}) == {GuardKind.INITIAL_SYNC}
    with pytest.raises(ValueError, match="cannot force skips-phase"):
        force_set([GuardKind.SKIPS_PHASE, GuardKind.PARITY])
    with pytest.raises(ValueError):
        force_set(["parity check"])  # names are kinds, not prose


def test_guard_failed_carries_kinds_and_messages() -> None:
    err = GuardFailed(
        "ann",
        Phase.CUTOVER,
        [Guard(GuardKind.PARITY, "parity differs"), Guard(GuardKind.INITIAL_SYNC, "syncing")],
    )
    assert err.kinds == {GuardKind.PARITY, GuardKind.INITIAL_SYNC}
    assert err.reasons == ("parity differs", "syncing")
    assert str(err) == "ann: cannot move to cutover: parity differs; syncing"


def test_cli_force_names_match_the_forceable_kinds() -> None:
    """The CLI spells the kinds without importing the migration; they must agree."""
    assert set(FORCE_NAMES) == {str(k) for k in FORCEABLE}
    assert _force_kinds((FORCE_ALL,)) == BARE_FORCE
    assert _force_kinds(("parity", "parity")) == {GuardKind.PARITY}
    assert _force_kinds(()) == frozenset()


def test_cli_force_help_and_usage() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["migrate", "cutover", "--help"])
    assert out.exit_code == 0, out.output
    assert "--force [initial-sync|parity|all]" in out.output
    assert "bare --force" in out.output
    assert "initial-sync" in out.output
    assert "profile_initial_sync_completed" in out.output
    bad = runner.invoke(main, ["migrate", "cutover", "--force", "no-authorization"])
    assert bad.exit_code == 2
    start = runner.invoke(main, ["migrate", "start", "--force"])
    assert start.exit_code == 2
    assert "--force does not apply" in start.output


def test_initial_sync_observations_keep_the_newest(tmp_path: Path) -> None:
    """A slow userinfo read cannot undo a newer completion notification."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store = Store(engine, None)
    account = store.accounts.upsert_account(
        app_user_id="ann", provider="cronofy", provider_account_id="acc_1", details={"sub": "s"}
    )
    assert account.id is not None
    with write(engine) as conn:
        assert record_initial_sync(
            store, account.id, required=False, source="notification", at=20, conn=conn
        )
        assert not record_initial_sync(
            store, account.id, required=True, source="userinfo", at=10, conn=conn
        )
        assert not record_initial_sync(
            store, "missing", required=True, source="userinfo", at=30, conn=conn
        )
    details = store.accounts.account_details(account.id)
    assert details == {
        "sub": "s",
        "initial_sync_required": False,
        "initial_sync_source": "notification",
        "initial_sync_at": 20,
    }
    with write(engine) as conn:
        assert record_initial_sync(
            store, account.id, required=True, source="userinfo", at=30, conn=conn
        )
    assert store.accounts.account_details(account.id)["initial_sync_required"] is True
    engine.dispose()
