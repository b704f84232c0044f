"""Repository methods for sync data: channels, cursors, event cache, id map, inbox, audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from calbridge._serialization import make_converter
from calbridge.models import Channel, Event, EventTime, TimeKind, TimeRange

from . import schema as t
from ._base import RepoBase
from ._records import AuditEntry, ChannelRecord, InboxItem
from .vault import row_aad

__all__ = ["DataMixin", "event_bounds"]

#: all-day and floating times are placed anywhere within +-14 h of UTC
_FLOATING_SLACK: Final = 14 * 3600
#: end bound of open-ended recurring series
_FOREVER: Final = 2**53

_converter = make_converter()


def _epoch(when: EventTime, *, end: bool) -> int:
    base = int(when.as_utc().timestamp())
    if when.kind is TimeKind.ZONED:
        return base
    return base + _FLOATING_SLACK if end else base - _FLOATING_SLACK


def event_bounds(event: Event) -> tuple[int, int]:
    """Conservative UTC epoch bounds of an event (window queries may over-include)."""
    start = _epoch(event.start, end=False)
    end = _epoch(event.end, end=True)
    if event.recurrence:
        end = _FOREVER
    return start, max(end, start)


def _epoch_of(value: dt.datetime) -> int:
    return int(value.timestamp())


#: what an upsert replaces in a cached event's row
_EVENT_UPDATED = (
    "start_at",
    "end_at",
    "ical_uid",
    "etag",
    "recurring_event_id",
    "payload",
    "updated_at",
)


class DataMixin(RepoBase):
    """Channels, sync cursors, the event cache, the id map, the inbox and the audit log."""

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

    # -- sync cursors -------------------------------------------------------------------

    def get_cursor(
        self, account_id: str, calendar_id: str, *, conn: sa.Connection | None = None
    ) -> str | None:
        """The stored sync cursor of a calendar (None: run a full sync)."""
        sc = t.sync_cursors.c
        with self._tx(conn, writing=False) as c:
            value = c.execute(
                sa.select(sc.cursor).where(
                    sc.account_id == account_id, sc.calendar_id == calendar_id
                )
            ).scalar()
        return None if value is None else str(value)

    def set_cursor(
        self,
        account_id: str,
        calendar_id: str,
        cursor: str | None,
        *,
        full_sync: bool = False,
        conn: sa.Connection | None = None,
    ) -> None:
        """Store a calendar's cursor (None clears it); ``full_sync`` stamps the time."""
        now = self.now()
        values: dict[str, Any] = {"cursor": cursor, "updated_at": now}
        if full_sync:
            values["last_full_sync_at"] = now
        with self._tx(conn) as c:
            stmt = self._insert(c, t.sync_cursors).values(
                account_id=account_id, calendar_id=calendar_id, **values
            )
            c.execute(
                stmt.on_conflict_do_update(
                    index_elements=["account_id", "calendar_id"], set_=values
                )
            )

    # -- event cache --------------------------------------------------------------------

    def upsert_events(
        self, account_id: str, events: Iterable[Event], *, conn: sa.Connection | None = None
    ) -> int:
        """Insert or replace cached events; returns how many were written.

        One statement runs for all of them (an executemany), not one per event.
        """
        now = self.now()
        rows = []
        for event in events:
            start, end = event_bounds(event)
            rows.append(
                {
                    "account_id": account_id,
                    "calendar_id": event.calendar_id,
                    "event_id": event.id,
                    "start_at": start,
                    "end_at": end,
                    "ical_uid": event.ical_uid,
                    "etag": event.etag,
                    "recurring_event_id": event.recurring_event_id,
                    "payload": _converter.unstructure(event),
                    "updated_at": now,
                }
            )
        if not rows:
            return 0
        with self._tx(conn) as c:
            insert = self._insert(c, t.event_cache)
            c.execute(
                insert.on_conflict_do_update(
                    index_elements=["account_id", "calendar_id", "event_id"],
                    set_={name: insert.excluded[name] for name in _EVENT_UPDATED},
                ),
                rows,
            )
        return len(rows)

    def delete_events(
        self,
        account_id: str,
        calendar_id: str,
        event_ids: Sequence[str],
        *,
        conn: sa.Connection | None = None,
    ) -> int:
        """Remove cached events (tombstones); returns how many existed."""
        ec = t.event_cache.c
        if not event_ids:
            return 0
        with self._tx(conn) as c:
            result = c.execute(
                t.event_cache.delete().where(
                    ec.account_id == account_id,
                    ec.calendar_id == calendar_id,
                    ec.event_id.in_(list(event_ids)),
                )
            )
        return int(result.rowcount)

    def get_event(
        self, account_id: str, calendar_id: str, event_id: str, *, conn: sa.Connection | None = None
    ) -> Event | None:
        """One cached event."""
        ec = t.event_cache.c
        with self._tx(conn, writing=False) as c:
            payload = c.execute(
                sa.select(ec.payload).where(
                    ec.account_id == account_id,
                    ec.calendar_id == calendar_id,
                    ec.event_id == event_id,
                )
            ).scalar()
        return None if payload is None else _converter.structure(payload, Event)

    def list_events(
        self,
        account_id: str,
        calendar_id: str,
        window: TimeRange | None = None,
        *,
        conn: sa.Connection | None = None,
    ) -> list[Event]:
        """Cached events of a calendar, optionally those whose bounds overlap ``window``.

        All-day and floating events are matched within +-14 h (any viewer's zone) and
        recurring masters always match: filter precisely after expansion.
        """
        ec = t.event_cache.c
        query = (
            sa.select(ec.payload)
            .where(ec.account_id == account_id, ec.calendar_id == calendar_id)
            .order_by(ec.start_at, ec.event_id)
        )
        if window is not None:
            query = query.where(
                ec.start_at < _epoch_of(window.end), ec.end_at > _epoch_of(window.start)
            )
        with self._tx(conn, writing=False) as c:
            payloads = c.execute(query).scalars().all()
        return [_converter.structure(p, Event) for p in payloads]

    def wipe_calendar(
        self, account_id: str, calendar_id: str, *, conn: sa.Connection | None = None
    ) -> int:
        """Drop a calendar's cached events and its cursor (after a 410 / expired cursor)."""
        with self._tx(conn) as c:
            result = c.execute(
                t.event_cache.delete().where(
                    t.event_cache.c.account_id == account_id,
                    t.event_cache.c.calendar_id == calendar_id,
                )
            )
            c.execute(
                t.sync_cursors.delete().where(
                    t.sync_cursors.c.account_id == account_id,
                    t.sync_cursors.c.calendar_id == calendar_id,
                )
            )
        return int(result.rowcount)

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

    # -- audit log ----------------------------------------------------------------------

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
