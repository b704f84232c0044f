"""The cross-provider id map: which provider event each app idempotency key became.

The SQL of the ``id_map`` and ``idempotency_keys`` tables (``store.ids``); the domain side,
resolving an app key to the routed provider's event, is :mod:`calbridge._identity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from . import schema as t
from ._base import Repository
from ._records import IdMapEntry

__all__ = ["IdMapRepository"]


class IdMapRepository(Repository):
    """The ``id_map`` and ``idempotency_keys`` tables (``store.ids``): which provider
    event each app key became, and the binding of a key to the create request using it."""

    def put_id(self, entry: IdMapEntry, *, conn: sa.Connection | None = None) -> None:
        """Record (or update) which provider event an app idempotency key became."""
        now = self.now()
        values: dict[str, Any] = {
            "app_user_id": entry.app_user_id,
            "account_id": entry.account_id,
            "calendar_id": entry.calendar_id,
            "event_id": entry.event_id,
            "ical_uid": entry.ical_uid,
            "updated_at": now,
        }
        with self._tx(conn) as c:
            stmt = self._insert(c, t.id_map).values(
                key=entry.key, provider=entry.provider, created_at=now, **values
            )
            c.execute(stmt.on_conflict_do_update(index_elements=["key", "provider"], set_=values))

    def claim_key(
        self,
        key: str,
        request_sha256: str,
        *,
        app_user_id: str,
        conn: sa.Connection | None = None,
    ) -> bool:
        """Bind an idempotency key to the fingerprint of the create request using it.

        True when the key is now bound to ``request_sha256`` (by this call, or earlier by
        the same request); False when it is bound to another request. The claim is an
        insert on the key, so of two concurrent first creates exactly one binds it.
        """
        k = t.idempotency_keys.c
        with self._tx(conn) as c:
            c.execute(
                self._insert(c, t.idempotency_keys)
                .values(
                    key=key,
                    request_sha256=request_sha256,
                    app_user_id=app_user_id,
                    created_at=self.now(),
                )
                .on_conflict_do_nothing(index_elements=["key"])
            )
            bound = c.execute(sa.select(k.request_sha256).where(k.key == key)).scalar()
        return bound == request_sha256

    def release_key(
        self, key: str, request_sha256: str, *, conn: sa.Connection | None = None
    ) -> bool:
        """Unbind a key claimed by ``request_sha256`` that made no event (the provider
        refused the request): the app may then use it with a corrected draft. A key with
        an id-map entry, or bound to another request, stays. True when it was released."""
        k = t.idempotency_keys.c
        made = sa.select(t.id_map.c.key).where(t.id_map.c.key == key).exists()
        with self._tx(conn) as c:
            res = c.execute(
                t.idempotency_keys.delete().where(
                    k.key == key, k.request_sha256 == request_sha256, ~made
                )
            )
        return bool(res.rowcount)

    def key_fingerprint(self, key: str, *, conn: sa.Connection | None = None) -> str | None:
        """The fingerprint of the create request ``key`` is bound to (None: unbound)."""
        k = t.idempotency_keys.c
        with self._tx(conn, writing=False) as c:
            found = c.execute(sa.select(k.request_sha256).where(k.key == key)).scalar()
        return None if found is None else str(found)

    def get_ids(self, key: str, *, conn: sa.Connection | None = None) -> dict[str, IdMapEntry]:
        """Every provider's copy of one app event: provider name -> entry."""
        with self._tx(conn, writing=False) as c:
            rows = c.execute(sa.select(t.id_map).where(t.id_map.c.key == key)).all()
        return {r.provider: _id_entry(r) for r in rows}

    def find_ids_by_ical_uid(
        self, ical_uid: str, *, app_user_id: str | None = None, conn: sa.Connection | None = None
    ) -> list[IdMapEntry]:
        """Entries sharing an iCalendar UID (the same native event across providers)."""
        m = t.id_map.c
        query = sa.select(t.id_map).where(m.ical_uid == ical_uid).order_by(m.key, m.provider)
        if app_user_id is not None:
            query = query.where(m.app_user_id == app_user_id)
        with self._tx(conn, writing=False) as c:
            return [_id_entry(r) for r in c.execute(query)]

    def find_id_by_event(
        self, provider: str, event_id: str, *, conn: sa.Connection | None = None
    ) -> IdMapEntry | None:
        """The entry of a provider event id (reverse lookup)."""
        m = t.id_map.c
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                sa.select(t.id_map).where(m.provider == provider, m.event_id == event_id)
            ).first()
        return None if row is None else _id_entry(row)

    def find_ids_for_events(
        self,
        provider: str,
        event_ids: Sequence[str],
        ical_uids: Sequence[str],
        *,
        app_user_id: str,
        conn: sa.Connection | None = None,
    ) -> list[IdMapEntry]:
        """The provider's entries of any of these events, and this user's entries of any
        of these iCalendar UIDs: what a sync round's id mapping needs for a chunk of
        events, in a few queries instead of two per event."""
        m = t.id_map.c
        found: dict[tuple[str, str], IdMapEntry] = {}
        with self._tx(conn, writing=False) as c:
            for i in range(0, len(event_ids), 500):
                query = sa.select(t.id_map).where(
                    m.provider == provider, m.event_id.in_(event_ids[i : i + 500])
                )
                found.update(((r.key, r.provider), _id_entry(r)) for r in c.execute(query))
            for i in range(0, len(ical_uids), 500):
                query = sa.select(t.id_map).where(
                    m.provider == provider,
                    m.app_user_id == app_user_id,
                    m.ical_uid.in_(ical_uids[i : i + 500]),
                )
                found.update(((r.key, r.provider), _id_entry(r)) for r in c.execute(query))
        return [found[k] for k in sorted(found)]

    def delete_ids(self, key: str, *, conn: sa.Connection | None = None) -> int:
        """Forget every provider copy of an app event, and the key's binding to the
        request that created it (the key may then create a new event)."""
        with self._tx(conn) as c:
            c.execute(t.idempotency_keys.delete().where(t.idempotency_keys.c.key == key))
            return int(c.execute(t.id_map.delete().where(t.id_map.c.key == key)).rowcount)


def _id_entry(row: sa.Row[Any]) -> IdMapEntry:
    return IdMapEntry(
        key=row.key,
        provider=row.provider,
        app_user_id=row.app_user_id,
        account_id=row.account_id,
        calendar_id=row.calendar_id,
        event_id=row.event_id,
        ical_uid=row.ical_uid,
    )
