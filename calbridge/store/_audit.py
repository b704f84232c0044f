"""The audit log: routing, migration and auth decisions, secret-free."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from . import schema as t
from ._base import Repository
from ._records import AuditEntry

__all__ = ["AuditRepository"]


class AuditRepository(Repository):
    """The ``audit_log`` table (``store.audit_log``)."""

    def audit(
        self,
        actor: str,
        action: str,
        *,
        app_user_id: str | None = None,
        account_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Append a decision to the audit log (``detail`` must be secret-free)."""
        with self._tx(conn) as c:
            c.execute(
                t.audit_log.insert().values(
                    at_ms=self.now_ms(),
                    actor=actor,
                    action=action,
                    app_user_id=app_user_id,
                    account_id=account_id,
                    detail=dict(detail or {}),
                )
            )

    def audit_entries(
        self,
        *,
        app_user_id: str | None = None,
        account_id: str | None = None,
        action: str | None = None,
        limit: int = 100,
        conn: sa.Connection | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, newest first."""
        a = t.audit_log.c
        query = sa.select(t.audit_log).order_by(a.id.desc()).limit(limit)
        if app_user_id is not None:
            query = query.where(a.app_user_id == app_user_id)
        if account_id is not None:
            query = query.where(a.account_id == account_id)
        if action is not None:
            query = query.where(a.action == action)
        with self._tx(conn, writing=False) as c:
            rows = c.execute(query).all()
        return [
            AuditEntry(
                id=r.id,
                at_ms=r.at_ms,
                actor=r.actor,
                action=r.action,
                app_user_id=r.app_user_id,
                account_id=r.account_id,
                detail=dict(r.detail or {}),
            )
            for r in rows
        ]
