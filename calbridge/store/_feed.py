"""The application feed's memory: what the app was told, per user and event identity.

See :mod:`calbridge._feed` for the rules; this is the SQL of the ``app_feed`` (identity ->
fingerprint of what the app was last told, or deleted) and ``app_feed_ids`` (provider
event id -> the identity it was told under) tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import sqlalchemy as sa

from . import schema as t
from ._base import Repository

__all__ = ["FeedRecord", "FeedRepository"]

#: ``(identity, provider event id, fingerprint or None for a deletion, is_deletion)``
FeedRecord: TypeAlias = tuple[str, str, str | None, bool]


class FeedRepository(Repository):
    """The ``app_feed`` and ``app_feed_ids`` tables (``store.feed``)."""

    def told(
        self,
        *,
        app_user_id: str,
        account_id: str,
        deleted_ids: Sequence[str],
        identities: Iterable[str],
        conn: sa.Connection | None = None,
    ) -> tuple[dict[str, str], dict[str, tuple[str, bool]]]:
        """What the app was told, in one read snapshot: ``(known, state)``.

        ``known``: deleted provider event id -> the identity it was told under;
        ``state``: identity -> ``(fingerprint, deleted)`` for ``identities`` and the
        identities in ``known``.
        """
        feed, ids = t.app_feed.c, t.app_feed_ids.c
        with self._tx(conn, writing=False) as c:
            known = {
                str(r.event_id): str(r.identity)
                for r in c.execute(
                    sa.select(ids.event_id, ids.identity).where(
                        ids.account_id == account_id,
                        ids.event_id.in_(list(deleted_ids) or [""]),
                    )
                )
            }
            candidates = set(identities) | set(known.values())
            state = {
                r.identity: (r.fingerprint, r.deleted)
                for r in c.execute(
                    sa.select(feed.identity, feed.fingerprint, feed.deleted).where(
                        feed.app_user_id == app_user_id,
                        feed.identity.in_(list(candidates) or [""]),
                    )
                )
            }
        return known, state

    def record(
        self,
        *,
        app_user_id: str,
        account_id: str,
        records: Sequence[FeedRecord],
        now: int,
        conn: sa.Connection | None = None,
    ) -> None:
        """Remember what the application was told (after its callbacks succeeded), at
        ``now`` (epoch s)."""
        if not records:
            return
        with self._tx(conn) as c:
            for ident, event_id, fp, is_deletion in records:
                self._upsert_id(c, app_user_id, account_id, event_id, ident)
                if is_deletion:
                    c.execute(
                        t.app_feed.update()
                        .where(
                            t.app_feed.c.app_user_id == app_user_id,
                            t.app_feed.c.identity == ident,
                        )
                        .values(deleted=True, updated_at=now)
                    )
                else:
                    self._upsert_feed(c, app_user_id, ident, fp or "", now)

    def _upsert_id(
        self, c: sa.Connection, app_user_id: str, account_id: str, event_id: str, ident: str
    ) -> None:
        stmt: Any = self._insert(c, t.app_feed_ids).values(
            account_id=account_id, event_id=event_id, app_user_id=app_user_id, identity=ident
        )
        c.execute(
            stmt.on_conflict_do_update(
                index_elements=["account_id", "event_id"], set_={"identity": ident}
            )
        )

    def _upsert_feed(
        self, c: sa.Connection, app_user_id: str, ident: str, fp: str, now: int
    ) -> None:
        stmt: Any = self._insert(c, t.app_feed).values(
            app_user_id=app_user_id, identity=ident, fingerprint=fp, deleted=False, updated_at=now
        )
        c.execute(
            stmt.on_conflict_do_update(
                index_elements=["app_user_id", "identity"],
                set_={"fingerprint": fp, "deleted": False, "updated_at": now},
            )
        )
