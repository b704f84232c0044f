"""Push: channels (their sealed secrets and health) and the webhook inbox."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from calbridge.models import Channel

from . import schema as t
from ._base import Repository
from ._records import ChannelRecord, InboxItem
from .vault import row_aad

__all__ = ["ChannelRepository"]


class ChannelRepository(Repository):
    """The ``channels`` and ``webhook_inbox`` tables (``store.channels``)."""

    # -- channels -----------------------------------------------------------------------

    def save_channel(
        self,
        channel: Channel,
        *,
        health: str = "healthy",
        health_reason: str | None = None,
        conn: sa.Connection | None = None,
    ) -> None:
        """Insert or replace a channel (its secret encrypted)."""
        now = self.now()
        sealed = (
            None
            if channel.secret is None
            else self.vault.encrypt(
                channel.secret, row_aad("channels", channel.id, channel.provider, "secret")
            )
        )
        values: dict[str, Any] = {
            "account_id": channel.account_id,
            "callback_url": channel.callback_url,
            "calendar_ids": list(channel.calendar_ids),
            "filters": dict(channel.filters),
            "resource_id": channel.resource_id,
            "expires_at": channel.expires_at,
            "secret": sealed,
            "key_id": None if sealed is None else self.vault.current_key_id,
            "health": health,
            "health_reason": health_reason,
            "updated_at": now,
        }
        with self._tx(conn) as c:
            stmt = self._insert(c, t.channels).values(
                provider=channel.provider, id=channel.id, created_at=now, failures=0, **values
            )
            c.execute(stmt.on_conflict_do_update(index_elements=["provider", "id"], set_=values))

    def _channel_record(self, row: sa.Row[Any]) -> ChannelRecord:
        secret = (
            None
            if row.secret is None
            else self.vault.decrypt(row.secret, row_aad("channels", row.id, row.provider, "secret"))
        )
        channel = Channel(
            provider=row.provider,
            id=row.id,
            callback_url=row.callback_url,
            account_id=row.account_id,
            calendar_ids=tuple(row.calendar_ids or ()),
            filters=dict(row.filters or {}),
            expires_at=row.expires_at,
            secret=secret,
            resource_id=row.resource_id,
        )
        return ChannelRecord(
            channel=channel,
            health=row.health,
            health_reason=row.health_reason,
            failures=row.failures,
            last_notification_at=row.last_notification_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_channel(
        self, provider: str, channel_id: str, *, conn: sa.Connection | None = None
    ) -> ChannelRecord | None:
        """One channel (what a webhook receiver's ChannelLookup reads)."""
        ch = t.channels.c
        with self._tx(conn, writing=False) as c:
            row = c.execute(
                sa.select(t.channels).where(ch.provider == provider, ch.id == channel_id)
            ).first()
        return None if row is None else self._channel_record(row)

    def channels_by_ids(
        self, provider: str, channel_ids: Sequence[str], *, conn: sa.Connection | None = None
    ) -> list[ChannelRecord]:
        """The channels of ``provider`` among these ids (a webhook receiver's batch lookup)."""
        ch = t.channels.c
        out: list[ChannelRecord] = []
        with self._tx(conn, writing=False) as c:
            for i in range(0, len(channel_ids), 500):
                query = sa.select(t.channels).where(
                    ch.provider == provider, ch.id.in_(channel_ids[i : i + 500])
                )
                out.extend(self._channel_record(row) for row in c.execute(query))
        return out

    def list_channels(
        self,
        *,
        provider: str | None = None,
        account_id: str | None = None,
        expiring_before: int | None = None,
        conn: sa.Connection | None = None,
    ) -> list[ChannelRecord]:
        """Channels filtered by provider, account, or expiry (for renewal)."""
        ch = t.channels.c
        query = sa.select(t.channels).order_by(ch.provider, ch.id)
        if provider is not None:
            query = query.where(ch.provider == provider)
        if account_id is not None:
            query = query.where(ch.account_id == account_id)
        if expiring_before is not None:
            query = query.where(ch.expires_at.is_not(None), ch.expires_at < expiring_before)
        with self._tx(conn, writing=False) as c:
            rows = c.execute(query).all()
        return [self._channel_record(r) for r in rows]

    def set_channel_health(
        self,
        provider: str,
        channel_id: str,
        health: str,
        *,
        reason: str | None = None,
        failed: bool = False,
        notified: bool = False,
        conn: sa.Connection | None = None,
    ) -> bool:
        """Update health; ``failed`` counts a failure, ``notified`` stamps a delivery."""
        ch = t.channels.c
        values: dict[str, Any] = {
            "health": health,
            "health_reason": reason,
            "updated_at": self.now(),
        }
        values["failures"] = ch.failures + 1 if failed else 0
        if notified:
            values["last_notification_at"] = self.now()
        with self._tx(conn) as c:
            result = c.execute(
                t.channels.update()
                .where(ch.provider == provider, ch.id == channel_id)
                .values(values)
            )
        return result.rowcount == 1

    def delete_channel(
        self, provider: str, channel_id: str, *, conn: sa.Connection | None = None
    ) -> bool:
        """Forget a channel."""
        ch = t.channels.c
        with self._tx(conn) as c:
            result = c.execute(
                t.channels.delete().where(ch.provider == provider, ch.id == channel_id)
            )
        return result.rowcount == 1

    # -- webhook inbox ------------------------------------------------------------------

    def inbox_insert(
        self,
        *,
        provider: str,
        delivery_key: str,
        kind: str,
        payload: Mapping[str, Any],
        channel_id: str | None = None,
        account_id: str | None = None,
        conn: sa.Connection | None = None,
    ) -> int | None:
        """Store a delivery once: its new row id, or None when it was seen before.

        Pass the receiver's transaction as ``conn`` and enqueue the job in it, so the row
        and the job commit together before the 2xx.
        """
        with self._tx(conn) as c:
            stmt = (
                self._insert(c, t.webhook_inbox)
                .values(
                    provider=provider,
                    delivery_key=delivery_key,
                    kind=kind,
                    channel_id=channel_id,
                    account_id=account_id,
                    payload=dict(payload),
                    received_at=self.now(),
                )
                .on_conflict_do_nothing(index_elements=["provider", "delivery_key"])
                .returning(t.webhook_inbox.c.id)
            )
            new_id = c.execute(stmt).scalar()
        return None if new_id is None else int(new_id)

    def inbox_mark_processed(self, item_id: int, *, conn: sa.Connection | None = None) -> None:
        """Stamp a delivery as handled."""
        with self._tx(conn) as c:
            c.execute(
                t.webhook_inbox.update()
                .where(t.webhook_inbox.c.id == item_id)
                .values(processed_at=self.now())
            )

    def inbox_pending(
        self, *, limit: int = 100, conn: sa.Connection | None = None
    ) -> list[InboxItem]:
        """Unprocessed deliveries, oldest first."""
        w = t.webhook_inbox.c
        query = (
            sa.select(t.webhook_inbox).where(w.processed_at.is_(None)).order_by(w.id).limit(limit)
        )
        with self._tx(conn, writing=False) as c:
            rows = c.execute(query).all()
        return [
            InboxItem(
                id=r.id,
                provider=r.provider,
                delivery_key=r.delivery_key,
                kind=r.kind,
                channel_id=r.channel_id,
                account_id=r.account_id,
                payload=dict(r.payload or {}),
                received_at=r.received_at,
                processed_at=r.processed_at,
            )
            for r in rows
        ]

    def inbox_purge(
        self,
        *,
        processed_before: int | None = None,
        received_before: int | None = None,
        limit: int | None = None,
        conn: sa.Connection | None = None,
    ) -> int:
        """Delete deliveries processed before ``processed_before`` or received before
        ``received_before`` (epoch s), at most ``limit`` of them (oldest first: keep each
        write transaction short); returns how many went."""
        w = t.webhook_inbox.c
        conditions = []
        if processed_before is not None:
            conditions.append(
                sa.and_(w.processed_at.is_not(None), w.processed_at < processed_before)
            )
        if received_before is not None:
            conditions.append(w.received_at < received_before)
        if not conditions:
            return 0
        where = sa.or_(*conditions)
        if limit is not None:
            oldest = sa.select(w.id).where(where).order_by(w.id).limit(limit)
            where = w.id.in_(oldest.scalar_subquery())
        with self._tx(conn) as c:
            result = c.execute(t.webhook_inbox.delete().where(where))
        return int(result.rowcount)

    def count_inbox(self, *, conn: sa.Connection | None = None) -> int:
        """How many deliveries the inbox holds."""
        with self._tx(conn, writing=False) as c:
            return int(
                c.execute(sa.select(sa.func.count()).select_from(t.webhook_inbox)).scalar() or 0
            )

    # -- the webhook receiver's transaction: pre-built statements ------------------------

    def record_delivery(
        self,
        conn: sa.Connection,
        *,
        provider: str,
        delivery_key: str,
        kind: str,
        channel_id: str | None,
        account_id: str | None,
        payload: Mapping[str, Any],
        received_at: int,
    ) -> int | None:
        """:meth:`inbox_insert` in the receiver's transaction, as one pre-built statement
        (building an upsert costs more than running it): the new row id, or None for a
        delivery seen before."""
        new_id = conn.execute(
            _receipt(conn.dialect.name).inbox,
            {
                "provider": provider,
                "delivery_key": delivery_key,
                "kind": kind,
                "channel_id": channel_id,
                "account_id": account_id,
                "payload": payload,
                "received_at": received_at,
            },
        ).scalar()
        return None if new_id is None else int(new_id)

    def touch_channel(self, conn: sa.Connection, provider: str, channel_id: str, at: int) -> None:
        """Stamp a channel's last notification (pre-built, in the receiver's transaction)."""
        conn.execute(
            _receipt(conn.dialect.name).touch_channel,
            {"p_provider": provider, "p_id": channel_id, "p_at": at},
        )


@attrs.frozen
class _Receipt:
    """The receiver's pre-built statements for one dialect."""

    inbox: Any
    touch_channel: Any


@functools.cache
def _receipt(dialect: str) -> _Receipt:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inbox_t = t.webhook_inbox
    inbox = (
        insert(inbox_t)
        .values(
            provider=sa.bindparam("provider", type_=inbox_t.c.provider.type),
            delivery_key=sa.bindparam("delivery_key", type_=inbox_t.c.delivery_key.type),
            kind=sa.bindparam("kind", type_=inbox_t.c.kind.type),
            channel_id=sa.bindparam("channel_id", type_=inbox_t.c.channel_id.type),
            account_id=sa.bindparam("account_id", type_=inbox_t.c.account_id.type),
            payload=sa.bindparam("payload", type_=inbox_t.c.payload.type),
            received_at=sa.bindparam("received_at", type_=inbox_t.c.received_at.type),
        )
        .on_conflict_do_nothing(index_elements=["provider", "delivery_key"])
        .returning(inbox_t.c.id)
    )
    ch = t.channels.c
    touch = (
        t.channels.update()
        .where(ch.provider == sa.bindparam("p_provider"), ch.id == sa.bindparam("p_id"))
        .values(last_notification_at=sa.bindparam("p_at", type_=ch.last_notification_at.type))
    )
    return _Receipt(inbox=inbox, touch_channel=touch)
