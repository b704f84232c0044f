"""Credentials: vault-encrypted tokens, the refresh lease and pending OAuth states."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from calbridge.errors import StoreError
from calbridge.models import Secret, TokenSet

from . import schema as t
from ._base import Repository
from ._records import CredentialRecord, OAuthStateRecord
from .vault import row_aad

__all__ = ["CredentialRepository"]


class CredentialRepository(Repository):
    """The ``credentials`` and ``oauth_states`` tables (``store.credentials``); every
    secret is sealed by the store's vault, bound to its row."""

    def _encrypt_tokens(self, account_id: str, provider: str, tokens: TokenSet) -> dict[str, Any]:
        v = self.vault
        return {
            "access_token": v.encrypt(
                tokens.access_token, row_aad("credentials", account_id, provider, "access_token")
            ),
            "refresh_token": None
            if tokens.refresh_token is None
            else v.encrypt(
                tokens.refresh_token, row_aad("credentials", account_id, provider, "refresh_token")
            ),
            "key_id": v.current_key_id,
            "expires_at": None if tokens.expires_at is None else int(tokens.expires_at),
            "scope": " ".join(tokens.scope),
            "token_type": tokens.token_type,
            "extra": dict(tokens.extra),
        }

    def save_tokens(
        self,
        account_id: str,
        tokens: TokenSet,
        *,
        conn: sa.Connection | None = None,
    ) -> CredentialRecord:
        """Store (insert or replace) an account's tokens, encrypted; bumps the generation."""
        with self._tx(conn) as c:
            provider = c.execute(
                sa.select(t.accounts.c.provider).where(t.accounts.c.id == account_id)
            ).scalar()
            if provider is None:
                raise StoreError(f"no account {account_id!r}")
            values = self._encrypt_tokens(account_id, provider, tokens)
            values["updated_at"] = self.now()
            stmt = self._insert(c, t.credentials).values(
                account_id=account_id, provider=provider, generation=1, **values
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.credentials.c.account_id],
                set_={**values, "generation": t.credentials.c.generation + 1},
            )
            c.execute(stmt)
            record = self.get_tokens(account_id, conn=c)
            assert record is not None
            return record

    def get_tokens(
        self, account_id: str, *, conn: sa.Connection | None = None, for_update: bool = False
    ) -> CredentialRecord | None:
        """An account's tokens, decrypted (DecryptionError on a wrong key or copied row).

        ``for_update`` takes the row lock on PostgreSQL (inside a write transaction).
        """
        query = sa.select(t.credentials).where(t.credentials.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        with self._tx(conn, writing=for_update) as c:
            row = c.execute(query).first()
        if row is None:
            return None
        v = self.vault
        provider = row.provider
        access = v.decrypt(
            row.access_token, row_aad("credentials", account_id, provider, "access_token")
        )
        refresh = (
            None
            if row.refresh_token is None
            else v.decrypt(
                row.refresh_token, row_aad("credentials", account_id, provider, "refresh_token")
            )
        )
        tokens = TokenSet(
            access_token=access,
            refresh_token=refresh,
            expires_at=row.expires_at,
            scope=tuple(row.scope.split()) if row.scope else (),
            token_type=row.token_type,
            extra=dict(row.extra or {}),
        )
        return CredentialRecord(
            account_id=account_id,
            provider=provider,
            tokens=tokens,
            generation=int(row.generation),
            key_id=row.key_id,
            refresh_owner=row.refresh_owner,
            refresh_lease_until_ms=row.refresh_lease_until_ms,
            updated_at=int(row.updated_at),
        )

    def swap_tokens(
        self,
        account_id: str,
        *,
        expected_generation: int,
        expected_refresh_token: Secret | None,
        new: TokenSet,
        conn: sa.Connection | None = None,
    ) -> CredentialRecord | None:
        """Replace the tokens only if they are still the ones the caller refreshed.

        The guard is the generation *and* the old refresh token (compared in constant
        time). When ``new`` carries no refresh token the stored one is kept. Returns the
        stored record, or None when someone else changed the tokens first.
        """
        with self._tx(conn) as c:
            current = self.get_tokens(account_id, conn=c, for_update=True)
            if current is None or current.generation != expected_generation:
                return None
            if current.tokens.refresh_token != expected_refresh_token:
                return None
            if new.refresh_token is None and current.tokens.refresh_token is not None:
                new = TokenSet(
                    access_token=new.access_token,
                    refresh_token=current.tokens.refresh_token,
                    expires_at=new.expires_at,
                    scope=new.scope or current.tokens.scope,
                    token_type=new.token_type,
                    extra=new.extra,
                )
            values = self._encrypt_tokens(account_id, current.provider, new)
            result = c.execute(
                t.credentials.update()
                .where(
                    t.credentials.c.account_id == account_id,
                    t.credentials.c.generation == expected_generation,
                )
                .values(**values, generation=expected_generation + 1, updated_at=self.now())
            )
            if result.rowcount != 1:
                return None
            return self.get_tokens(account_id, conn=c)

    # -- refresh lease (SQLite and PostgreSQL alike; PostgreSQL also row-locks) -----------

    def acquire_refresh_lease(
        self, account_id: str, owner: str, *, ttl_ms: int, conn: sa.Connection | None = None
    ) -> bool:
        """Take the account's refresh lease unless another owner holds a live one.

        A short write transaction (``BEGIN IMMEDIATE`` / ``SELECT ... FOR UPDATE``); the
        HTTP refresh happens after it commits, never inside it.
        """
        cr = t.credentials.c
        now = self.now_ms()
        with self._tx(conn) as c:
            if c.dialect.name == "postgresql":
                c.execute(
                    sa.select(cr.account_id).where(cr.account_id == account_id).with_for_update()
                )
            result = c.execute(
                t.credentials.update()
                .where(
                    cr.account_id == account_id,
                    sa.or_(
                        cr.refresh_owner.is_(None),
                        cr.refresh_owner == owner,
                        cr.refresh_lease_until_ms.is_(None),
                        cr.refresh_lease_until_ms <= now,
                    ),
                )
                .values(refresh_owner=owner, refresh_lease_until_ms=now + ttl_ms)
            )
        return result.rowcount == 1

    def release_refresh_lease(
        self, account_id: str, owner: str, *, conn: sa.Connection | None = None
    ) -> None:
        """Give the lease back (only if ``owner`` still holds it)."""
        cr = t.credentials.c
        with self._tx(conn) as c:
            c.execute(
                t.credentials.update()
                .where(cr.account_id == account_id, cr.refresh_owner == owner)
                .values(refresh_owner=None, refresh_lease_until_ms=None)
            )

    # -- OAuth states -------------------------------------------------------------------

    def put_oauth_state(
        self,
        *,
        state_hash: str,
        app_user_id: str,
        provider: str,
        redirect_uri: str,
        code_verifier: Secret | None,
        scopes: Sequence[str],
        expires_at: int,
        conn: sa.Connection | None = None,
    ) -> None:
        """Record a pending authorization (the state is stored only as its hash)."""
        sealed = (
            None
            if code_verifier is None
            else self.vault.encrypt(
                code_verifier, row_aad("oauth_states", state_hash, provider, "code_verifier")
            )
        )
        with self._tx(conn) as c:
            c.execute(
                t.oauth_states.insert().values(
                    state_hash=state_hash,
                    app_user_id=app_user_id,
                    provider=provider,
                    redirect_uri=redirect_uri,
                    code_verifier=sealed,
                    key_id=None if sealed is None else self.vault.current_key_id,
                    scopes=" ".join(scopes),
                    created_at=self.now(),
                    expires_at=expires_at,
                )
            )

    def consume_oauth_state(
        self, state_hash: str, *, conn: sa.Connection | None = None
    ) -> OAuthStateRecord | None:
        """Mark a state used and return it; None when unknown, used before or expired.

        One-time: of two concurrent callbacks with the same state, one gets None.
        """
        o = t.oauth_states.c
        now = self.now()
        with self._tx(conn) as c:
            row = c.execute(
                t.oauth_states.update()
                .where(o.state_hash == state_hash, o.used_at.is_(None), o.expires_at > now)
                .values(used_at=now)
                .returning(*t.oauth_states.c)
            ).first()
        if row is None:
            return None
        verifier = (
            None
            if row.code_verifier is None
            else self.vault.decrypt(
                row.code_verifier,
                row_aad("oauth_states", state_hash, row.provider, "code_verifier"),
            )
        )
        return OAuthStateRecord(
            app_user_id=row.app_user_id,
            provider=row.provider,
            redirect_uri=row.redirect_uri,
            code_verifier=verifier,
            scopes=tuple(row.scopes.split()) if row.scopes else (),
            created_at=row.created_at,
            expires_at=row.expires_at,
        )

    def purge_oauth_states(self, *, older_than: int, conn: sa.Connection | None = None) -> int:
        """Delete states that expired before ``older_than`` (epoch s); returns the count."""
        with self._tx(conn) as c:
            result = c.execute(
                t.oauth_states.delete().where(t.oauth_states.c.expires_at < older_than)
            )
        return int(result.rowcount)
