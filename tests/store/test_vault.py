"""Token vault: AES-GCM, row binding, fail-closed keys, rotation, no plaintext at rest."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from calbridge.errors import ConfigurationError, DecryptionError
from calbridge.models import Channel, Secret, TokenSet
from calbridge.store import KeyRing, Store, Vault, generate_key, is_sqlite, row_aad, schema, write

CANARY_AT = "canary-access-7f3a9c1e5b"
CANARY_RT = "canary-refresh-2d8e4f6a0c"
CANARY_CH = "canary-channel-9b1d3f5e7a"


def test_round_trip_and_format(vault: Vault, key_a: str) -> None:
    aad = row_aad("credentials", "acc1", "google", "access_token")
    sealed = vault.encrypt(Secret("tok"), aad)
    assert sealed.startswith("cb1.ka.")
    assert "tok" not in sealed
    assert vault.decrypt(sealed, aad) == Secret("tok")
    assert vault.encrypt("tok", aad) != sealed  # random nonce
    assert key_a not in repr(vault)
    assert repr(vault) == "Vault(KeyRing(current='ka', key_ids=['ka']))"


@pytest.mark.parametrize(
    "other",
    [
        ("credentials", "acc2", "google", "access_token"),  # another row
        ("credentials", "acc1", "cronofy", "access_token"),  # another provider
        ("credentials", "acc1", "google", "refresh_token"),  # another column
    ],
)
def test_ciphertext_is_bound_to_its_row(vault: Vault, other: tuple[str, str, str, str]) -> None:
    sealed = vault.encrypt("tok", row_aad("credentials", "acc1", "google", "access_token"))
    with pytest.raises(DecryptionError):
        vault.decrypt(sealed, row_aad(*other))


def test_fails_closed(vault: Vault, key_a: str, key_b: str) -> None:
    aad = row_aad("t", "r", "p", "c")
    sealed = vault.encrypt("tok", aad)
    wrong = Vault(KeyRing.of([("ka", key_b)]))
    with pytest.raises(DecryptionError, match="wrong"):
        wrong.decrypt(sealed, aad)
    missing = Vault(KeyRing.of([("kb", key_b)]))
    with pytest.raises(DecryptionError, match="'ka', which is not configured"):
        missing.decrypt(sealed, aad)
    for bad in ("tok", "cb1.ka.", "cb1.ka.!!!!", "cb2.ka.AAAA", sealed[:-4] + "AAAA"):
        with pytest.raises(DecryptionError):
            vault.decrypt(bad, aad)
    # a kid swapped in the text does not move the value to another key
    both = Vault(KeyRing.of([("kb", key_a), ("ka", key_a)]))
    with pytest.raises(DecryptionError):
        both.decrypt(sealed.replace("cb1.ka.", "cb1.kb."), aad)


@pytest.mark.parametrize(
    "spec",
    ["", "   ", "nokey", "k1:not-base64!", "k1:" + "QUJD", "bad kid:" + "A" * 44, "a:{k},a:{k}"],
)
def test_bad_key_config(spec: str) -> None:
    key = generate_key()
    text = spec.replace("{k}", key)
    with pytest.raises(ConfigurationError) as info:
        KeyRing.parse(text)
    assert key not in str(info.value)


def test_keys_from_env(key_a: str, key_b: str) -> None:
    ring = KeyRing.from_env({"CALBRIDGE_KEYS": f"new:{key_b}, old:{key_a}"})
    assert ring.key_ids == ("new", "old")
    assert ring.only_current().key_ids == ("new",)
    with pytest.raises(ConfigurationError, match="CALBRIDGE_KEYS"):
        Vault.from_env({})


def test_store_without_vault_fails_closed(engine: sa.Engine) -> None:
    store = Store(engine)
    account = store.accounts.upsert_account(
        app_user_id="u", provider="google", provider_account_id="g"
    )
    assert account.id is not None
    with pytest.raises(ConfigurationError):
        store.credentials.save_tokens(account.id, TokenSet(access_token="x"))


def test_copied_row_fails_to_decrypt(store: Store) -> None:
    a = store.accounts.upsert_account(app_user_id="u1", provider="google", provider_account_id="ga")
    b = store.accounts.upsert_account(app_user_id="u2", provider="google", provider_account_id="gb")
    assert a.id is not None
    assert b.id is not None
    store.credentials.save_tokens(a.id, TokenSet(access_token="at-a", refresh_token="rt-a"))
    store.credentials.save_tokens(b.id, TokenSet(access_token="at-b", refresh_token="rt-b"))
    cr = schema.credentials
    with write(store.engine) as conn:
        row = conn.execute(sa.select(cr).where(cr.c.account_id == a.id)).one()
        conn.execute(
            cr.update().where(cr.c.account_id == b.id).values(access_token=row.access_token)
        )
    with pytest.raises(DecryptionError):
        store.credentials.get_tokens(b.id)


def _fill(store: Store, n: int) -> list[str]:
    ids = []
    for i in range(n):
        acc = store.accounts.upsert_account(
            app_user_id=f"u{i}", provider="google", provider_account_id=f"g{i}"
        )
        assert acc.id is not None
        store.credentials.save_tokens(
            acc.id, TokenSet(access_token=f"{CANARY_AT}-{i}", refresh_token=f"{CANARY_RT}-{i}")
        )
        store.channels.save_channel(
            Channel(
                provider="google",
                id=f"ch{i}",
                callback_url="https://x/cb",
                account_id=acc.id,
                secret=f"{CANARY_CH}-{i}",
            )
        )
        ids.append(acc.id)
    return ids


def test_rotation_interrupted_and_restarted(engine: sa.Engine, key_a: str, key_b: str) -> None:
    old = Store(engine, Vault(KeyRing.of([("ka", key_a)])))
    ids = _fill(old, 7)
    both = Store(engine, Vault(KeyRing.of([("kb", key_b), ("ka", key_a)])))
    assert both.keys.count_unrotated() == 14
    first = both.keys.rotate_keys(batch_size=3, max_batches=2)  # interrupted half-way
    assert first.rotated == 6
    assert first.remaining == 8
    new_only = Store(engine, Vault(KeyRing.of([("kb", key_b)])))

    def read_all() -> None:
        for account_id in ids:
            new_only.credentials.get_tokens(account_id)

    with pytest.raises(DecryptionError):
        read_all()
    # a token refreshed meanwhile is written with the new key and stays readable
    both.credentials.save_tokens(
        ids[-1], TokenSet(access_token=f"{CANARY_AT}-new", refresh_token="rt")
    )
    second = both.keys.rotate_keys(batch_size=3)  # restarted
    assert second.remaining == 0
    assert both.keys.rotate_keys().rotated == 0  # idempotent
    for i, account_id in enumerate(ids):
        rec = new_only.credentials.get_tokens(account_id)
        assert rec is not None
        expected = f"{CANARY_AT}-new" if i == len(ids) - 1 else f"{CANARY_AT}-{i}"
        assert rec.tokens.access_token.reveal() == expected
        channel = new_only.channels.get_channel("google", f"ch{i}")
        assert channel is not None
        assert channel.channel.secret == Secret(f"{CANARY_CH}-{i}")
    assert new_only.keys.count_unrotated() == 0


def test_rotation_without_an_old_key_refuses_before_writing(
    engine: sa.Engine, key_a: str, key_b: str
) -> None:
    """The operator dropped the old key too early: the rotation names the missing key and
    re-encrypts nothing (not even the rows it could read), so adding the key back and
    running it again finishes the job."""
    old = Store(engine, Vault(KeyRing.of([("ka", key_a)])))
    ids = _fill(old, 4)
    new_only = Store(engine, Vault(KeyRing.of([("kb", key_b)])))
    new_only.credentials.save_tokens(
        ids[0], TokenSet(access_token=f"{CANARY_AT}-new", refresh_token="rt")
    )
    before = new_only.keys.count_unrotated()
    with pytest.raises(DecryptionError, match=r"key\(s\) ka, .*nothing was re-encrypted"):
        new_only.keys.rotate_keys(batch_size=1)
    assert new_only.keys.count_unrotated() == before
    both = Store(engine, Vault(KeyRing.of([("kb", key_b), ("ka", key_a)])))
    assert both.keys.rotate_keys().remaining == 0
    assert new_only.credentials.get_tokens(ids[1]) is not None


def _raw_bytes(engine: sa.Engine, tmp_path: Path) -> bytes:
    if is_sqlite(engine):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        path = Path(str(engine.url.database))
        data = path.read_bytes()
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            if extra.exists():
                data += extra.read_bytes()
        return data
    bindir = os.environ.get("CALBRIDGE_PG_BINDIR", "")
    pg_dump = Path(bindir) / "pg_dump"
    assert pg_dump.exists(), "CALBRIDGE_PG_BINDIR must point at the server's binaries"
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    out = tmp_path / "dump.sql"
    subprocess.run([str(pg_dump), "--no-owner", "-f", str(out), url], check=True)
    return out.read_bytes()


def test_canary_absent_at_rest(store: Store, tmp_path: Path) -> None:
    _fill(store, 3)
    store.credentials.put_oauth_state(
        state_hash="h",
        app_user_id="u",
        provider="google",
        redirect_uri="https://x/cb",
        code_verifier=Secret("canary-verifier-x1"),
        scopes=(),
        expires_at=store.now() + 600,
    )
    data = _raw_bytes(store.engine, tmp_path)
    assert b"credentials" in data  # the dump / file is real
    for canary in (CANARY_AT, CANARY_RT, CANARY_CH, "canary-verifier-x1"):
        assert canary.encode() not in data
    assert b"cb1.ka." in data
