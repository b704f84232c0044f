"""Accounts (one app user's connection to one provider) and provider-wide pauses."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from calbridge.models import Account, AccountStatus

from . import schema as t
from ._base import Repository
from ._records import ProviderStatus

__all__ = ["AccountRepository"]


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        id=row.id,
        app_user_id=row.app_user_id,
        provider=row.provider,
        provider_account_id=row.provider_account_id,
        email=row.email,
        status=AccountStatus(row.status),
    )


class AccountRepository(Repository):
    """The ``accounts`` and ``provider_status`` tables (``store.accounts``)."""

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

    def account_ids(
        self,
        app_user_id: str,
        *,
        excluding: str | None = None,
        conn: sa.Connection | None = None,
    ) -> list[str]:
        """The ids of an app user's accounts (but ``excluding``)."""
        a = t.accounts.c
        query = sa.select(a.id).where(a.app_user_id == app_user_id)
        if excluding is not None:
            query = query.where(a.id != excluding)
        with self._tx(conn, writing=False) as c:
            return [str(r.id) for r in c.execute(query)]

    def update_details(
        self,
        account_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        conn: sa.Connection | None = None,
    ) -> bool:
        """Read an account's details under a row lock, and store what ``change`` makes of
        them (None: leave them). False when the account is gone or nothing was stored."""
        a = t.accounts.c
        with self._tx(conn) as c:
            row = c.execute(
                sa.select(a.details).where(a.id == account_id).with_for_update()
            ).first()
            if row is None:
                return False
            details = change(dict(row.details or {}))
            if details is None:
                return False
            c.execute(t.accounts.update().where(a.id == account_id).values(details=details))
        return True
