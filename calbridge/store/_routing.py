"""Routing and migration state per app user, and the facts the router reads."""

from __future__ import annotations

import sqlalchemy as sa

from calbridge.errors import StoreError

from . import schema as t
from ._base import Repository
from ._records import AccountFactsRecord, RoutingState, UserFactsRecord

__all__ = ["RoutingRepository", "StaleWriteError"]


class StaleWriteError(StoreError):
    """An optimistic update lost: the row changed since it was read. Re-read and retry."""


class RoutingRepository(Repository):
    """The ``routing_state`` table (``store.routing``)."""

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
        (``0`` = must not exist yet) raising :class:`StaleWriteError` when it lost (also
        when another writer inserted the user's first row meanwhile)."""
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
                try:
                    c.execute(
                        t.routing_state.insert().values(
                            app_user_id=state.app_user_id, version=1, **values
                        )
                    )
                except sa.exc.IntegrityError as exc:  # a concurrent first insert won
                    raise StaleWriteError(
                        f"routing of {state.app_user_id!r} was created meanwhile"
                    ) from exc
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

    def user_facts(self, app_user_id: str, *, conn: sa.Connection | None = None) -> UserFactsRecord:
        """Everything the router needs for one user, in one SQL statement.

        Accounts LEFT JOIN the user's routing row (a user with a routing row and no
        account still yields one row, with NULL account columns).
        """
        acc, rs = t.accounts.c, t.routing_state.c
        users = sa.select(sa.literal(app_user_id).label("uid")).subquery()
        query = (
            sa.select(
                acc.id,
                acc.provider,
                acc.status,
                acc.email,
                acc.created_at,
                rs.phase,
                rs.data,
            )
            .select_from(users)
            .outerjoin(t.accounts, acc.app_user_id == users.c.uid)
            .outerjoin(t.routing_state, rs.app_user_id == users.c.uid)
            .order_by(acc.created_at, acc.id)
        )
        with self._tx(conn, writing=False) as c:
            rows = c.execute(query).all()
        return UserFactsRecord(
            app_user_id=app_user_id,
            accounts=tuple(
                AccountFactsRecord(
                    account_id=r.id,
                    provider=r.provider,
                    status=r.status,
                    email=r.email,
                    created_at=int(r.created_at or 0),
                )
                for r in rows
                if r.id is not None
            ),
            phase=rows[0].phase if rows else None,
            data=dict(rows[0].data or {}) if rows else {},
        )
