"""``calbridge db`` and ``calbridge keys`` on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from calbridge.cli import main
from calbridge.models import TokenSet
from calbridge.store import KeyRing, Store, Vault, create_engine, generate_key


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_db_upgrade_and_status(db_url: str) -> None:
    code, out = _run(["db", "status", "--database-url", db_url, "--json"])
    if db_url.startswith("sqlite"):  # read-only: a missing file is an error, not created
        assert code == 1
        assert "no calbridge database at" in out
    else:
        assert code == 0
        assert json.loads(out)["up_to_date"] is False
    code, out = _run(["db", "upgrade", "--database-url", db_url])
    assert code == 0, out
    assert "upgraded empty database ->" in out
    code, out = _run(["db", "upgrade", "--database-url", db_url])
    assert "already at" in out
    code, out = _run(["db", "status", "--database-url", db_url, "--json"])
    data = json.loads(out)
    assert data["up_to_date"] is True
    assert data["current"] == data["heads"]
    assert data["current"]


def test_db_bad_url() -> None:
    code, out = _run(["db", "upgrade", "--database-url", "mysql://nope/x"])
    assert code != 0
    assert "unsupported database" in out


def test_keys_generate() -> None:
    code, out = _run(["keys", "generate", "--kid", "k9"])
    assert code == 0
    ring = KeyRing.parse(out.strip())
    assert ring.current == "k9"


def test_keys_rotate_restartable(db_url: str) -> None:
    old, new = f"old:{generate_key()}", f"new:{generate_key()}"
    engine = create_engine(db_url, upgrade=True)
    store = Store(engine, Vault(KeyRing.parse(old)))
    for i in range(5):
        acc = store.accounts.upsert_account(
            app_user_id=f"u{i}", provider="p", provider_account_id=str(i)
        )
        assert acc.id is not None
        store.credentials.save_tokens(acc.id, TokenSet(access_token=f"a{i}", refresh_token=f"r{i}"))
    env = {"CALBRIDGE_KEYS": f"{new},{old}"}
    code, out = _run(["keys", "check", "--database-url", db_url, "--json"], env)
    assert (code, json.loads(out)["remaining"]) == (1, 5)
    code, out = _run(
        [
            *("keys", "rotate", "--database-url", db_url),
            *("--batch-size", "2", "--max-batches", "1", "--json"),
        ],
        env,
    )
    assert code == 0
    assert json.loads(out) == {"rotated": 2, "remaining": 3, "current_key_id": "new"}
    code, out = _run(["keys", "rotate", "--database-url", db_url, "--batch-size", "2"], env)
    assert "0 remaining" in out
    code, _ = _run(["keys", "check", "--database-url", db_url], {"CALBRIDGE_KEYS": new})
    assert code == 0
    only_new = Store(engine, Vault(KeyRing.parse(new)))
    accounts = only_new.accounts.list_accounts()
    assert len(accounts) == 5
    for acc in accounts:
        assert acc.id is not None
        rec = only_new.credentials.get_tokens(acc.id)
        assert rec is not None
        assert rec.tokens.refresh_token is not None
        assert rec.tokens.refresh_token.reveal() == f"r{acc.provider_account_id}"
    engine.dispose()


@pytest.mark.parametrize("keys", ["", "k1:short"])
def test_keys_fail_closed_without_valid_keys(db_url: str, keys: str) -> None:
    code, out = _run(["keys", "rotate", "--database-url", db_url], {"CALBRIDGE_KEYS": keys})
    assert code != 0
    assert "CALBRIDGE_KEYS" in out
