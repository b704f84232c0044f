"""The typed repository over calbridge's tables (accounts, tokens, routing, OAuth states).

Methods are synchronous and short; async code awaits them through ``calbridge.store.offload``.
Each takes an optional ``conn`` so several calls (e.g. an inbox insert and a job enqueue)
share one transaction::

    with write(store.engine) as conn:
        if store.inbox_insert(..., conn=conn):
            enqueue(conn, ...)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from calbridge.errors import StoreError
from calbridge.models import Account, AccountStatus, Secret, TokenSet

from . import schema as t
from ._data import DataMixin
from ._idmap import IdMapMixin
from ._records import CredentialRecord, OAuthStateRecord, ProviderStatus, RoutingState
from ._rotate import RotationMixin
from .vault import row_aad

__all__ = ["StaleWriteError", "Store"]


class StaleWriteError(StoreError):
    """An optimistic update lost: the row changed since it was read. Re-read and retry."""


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        id=row.id,
        app_user_id=row.app_user_id,
        provider=row.provider,
        provider_account_id=row.provider_account_id,
        email=row.email,
        status=AccountStatus(row.status),
    )


class Store(DataMixin, IdMapMixin, RotationMixin):
    """calbridge's state: one instance per process, shared by all coroutines.

    Args:
        engine: from :func:`calbridge.store.create_engine`.
        vault: the token vault (needed for tokens, channel secrets, OAuth states).
        clock: epoch-seconds clock (inject a fake in tests).
    """

    # -- accounts -------------------------------------------------------------------

    def upsert_account(
        self,
        *,
        app_user_id: str,
        provider: str,
        provider_account_id: str,
        email: str | None = None,
        details: Mapping[str, Any] | None = None,
        conn: sa.Connection | None = None,
    ) -> Account:
        """Create the account, or refresh email/details of the existing one (status kept).

        Safe under concurrency: two processes connecting the same account get one row.
        """
        now = self.now()
        new_id = uuid.uuid4().hex
        with self._tx(conn) as c:
            c.execute(
                self._insert(c, t.accounts)
                .values(
                    id=new_id,
                    app_user_id=app_user_id,
                    provider=provider,
                    provider_account_id=provider_account_id,
                    email=email,
                    status=AccountStatus.ACTIVE.value,
                    details=dict(details or {}),
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=["app_user_id", "provider", "provider_account_id"]
                )
            )
            account = self.find_account(
                app_user_id=app_user_id,
                provider=provider,
                provider_account_id=provider_account_id,
                conn=c,
            )
            assert account is not None
            assert account.id is not None
            if account.id == new_id or (email is None and details is None):
                return account
            values: dict[str, Any] = {"updated_at": now}
            if email is not None:
                values["email"] = email
            if details is not None:
                values["details"] = dict(details)
            c.execute(t.accounts.update().where(t.accounts.c.id == account.id).values(values))
            updated = self.get_account(account.id, conn=c)
            assert updated is not None
            return updated

    def get_account(self, account_id: str, *, conn: sa.Connection | None = None) -> Account | None:
        """One account by calbridge id."""
        with self._tx(conn, writing=False) as c:
            row = c.execute(sa.select(t.accounts).where(t.accounts.c.id == account_id)).first()
        return _account(row) if row is not None else None

    def find_account(
        self,
        *,
        app_user_id: str,
        provider: str,
        provider_account_id: str,
        conn: sa.Connection | None = None,
    ) -> Account | None:
        """The account of this app user at this provider identity."""
        a = t.accounts.c
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                sa.select(t.accounts).where(
                    a.app_user_id == app_user_id,
                    a.provider == provider,
                    a.provider_account_id == provider_account_id,
                )
            ).first()
        return _account(row) if row is not None else None

    def account_details(
        self, account_id: str, *, conn: sa.Connection | None = None
    ) -> dict[str, Any]:
        """The non-secret details stored with an account."""
        with self._tx(conn, writing=False) as c:
            value = c.execute(
                sa.select(t.accounts.c.details).where(t.accounts.c.id == account_id)
            ).scalar()
        return dict(value or {})

    def list_accounts(
        self,
        *,
        app_user_id: str | None = None,
        provider: str | None = None,
        status: AccountStatus | None = None,
        conn: sa.Connection | None = None,
    ) -> list[Account]:
        """Accounts filtered by app user, provider and status (oldest first)."""
        a = t.accounts.c
        query = sa.select(t.accounts).order_by(a.created_at, a.id)
        if app_user_id is not None:
            query = query.where(a.app_user_id == app_user_id)
        if provider is not None:
            query = query.where(a.provider == provider)
        if status is not None:
            query = query.where(a.status == status.value)
        with self._tx(conn, writing=False) as c:
            return [_account(r) for r in c.execute(query)]

    def set_account_status(
        self,
        account_id: str,
        status: AccountStatus,
        *,
        reason: str | None = None,
        conn: sa.Connection | None = None,
    ) -> tuple[Account, AccountStatus] | None:
        """Change the status; returns ``(account, old_status)`` only when it changed.

        The compare-and-set on the old status means that of several processes marking
        the same account, exactly one gets the answer (and fires the hook).
        """
        a = t.accounts.c
        with self._tx(conn) as c:
            current = self.get_account(account_id, conn=c)
            if current is None or current.status is status:
                return None
            result = c.execute(
                t.accounts.update()
                .where(a.id == account_id, a.status == current.status.value)
                .values(status=status.value, status_reason=reason, updated_at=self.now())
            )
            if result.rowcount != 1:
                return None
            updated = self.get_account(account_id, conn=c)
            assert updated is not None
            return updated, current.status

    def delete_account(self, account_id: str, *, conn: sa.Connection | None = None) -> bool:
        """Delete an account with its tokens, channels, cursors and cache."""
        with self._tx(conn) as c:
            result = c.execute(t.accounts.delete().where(t.accounts.c.id == account_id))
        return result.rowcount == 1

    # -- credentials ------------------------------------------------------------------

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
            account = self.get_account(account_id, conn=c)
            if account is None:
                raise StoreError(f"no account {account_id!r}")
            values = self._encrypt_tokens(account_id, account.provider, tokens)
            values["updated_at"] = self.now()
            stmt = self._insert(c, t.credentials).values(
                account_id=account_id, provider=account.provider, generation=1, **values
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

    # -- provider status ------------------------------------------------------------------

    def pause_provider(
        self,
        provider: str,
        *,
        reason: str,
        until: int | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Pause a provider for everyone (its app credentials were refused)."""
        values = {
            "status": "paused",
            "reason": reason,
            "paused_until": until,
            "updated_at": self.now(),
        }
        with self._tx(conn) as c:
            stmt = self._insert(c, t.provider_status).values(provider=provider, **values)
            c.execute(stmt.on_conflict_do_update(index_elements=["provider"], set_=values))

    def resume_provider(self, provider: str, *, conn: sa.Connection | None = None) -> None:
        """Lift a pause."""
        with self._tx(conn) as c:
            c.execute(t.provider_status.delete().where(t.provider_status.c.provider == provider))

    def provider_status(
        self, provider: str, *, conn: sa.Connection | None = None
    ) -> ProviderStatus | None:
        """The provider's pause, or None when it is active (expired pauses are ignored)."""
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                sa.select(t.provider_status).where(t.provider_status.c.provider == provider)
            ).first()
        if row is None or (row.paused_until is not None and row.paused_until <= self.now()):
            return None
        return ProviderStatus(
            provider=row.provider,
            status=row.status,
            reason=row.reason,
            paused_until=row.paused_until,
            updated_at=row.updated_at,
        )

    # -- routing ----------------------------------------------------------------------

    def get_routing(
        self, app_user_id: str, *, conn: sa.Connection | None = None
    ) -> RoutingState | None:
        """An app user's routing / migration state."""
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                sa.select(t.routing_state).where(t.routing_state.c.app_user_id == app_user_id)
            ).first()
        if row is None:
            return None
        return RoutingState(
            app_user_id=row.app_user_id,
            phase=row.phase,
            primary_account_id=row.primary_account_id,
            secondary_account_id=row.secondary_account_id,
            data=dict(row.data or {}),
            version=int(row.version),
            updated_at=row.updated_at,
        )

    def set_routing(
        self,
        state: RoutingState,
        *,
        expected_version: int | None = None,
        conn: sa.Connection | None = None,
    ) -> RoutingState:
        """Write routing state; with ``expected_version`` it is a compare-and-set
        (``0`` = must not exist yet) raising :class:`StaleWriteError` when it lost."""
        r = t.routing_state.c
        values = {
            "phase": state.phase,
            "primary_account_id": state.primary_account_id,
            "secondary_account_id": state.secondary_account_id,
            "data": dict(state.data),
            "updated_at": self.now(),
        }
        with self._tx(conn) as c:
            current = self.get_routing(state.app_user_id, conn=c)
            current_version = 0 if current is None else current.version
            if expected_version is not None and expected_version != current_version:
                raise StaleWriteError(
                    f"routing of {state.app_user_id!r} is at version {current_version}, "
                    f"not {expected_version}"
                )
            if current is None:
                c.execute(
                    t.routing_state.insert().values(
                        app_user_id=state.app_user_id, version=1, **values
                    )
                )
            else:
                result = c.execute(
                    t.routing_state.update()
                    .where(r.app_user_id == state.app_user_id, r.version == current_version)
                    .values(**values, version=current_version + 1)
                )
                if result.rowcount != 1:
                    raise StaleWriteError(f"routing of {state.app_user_id!r} changed meanwhile")
            stored = self.get_routing(state.app_user_id, conn=c)
            assert stored is not None
            return stored

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
