"""Pre-built statements of the receiver's transaction (built once per dialect).

Building SQLAlchemy upsert statements costs milliseconds per call, far more than
executing them; the receiver runs these three statements for every notification, so it
builds them once with bind parameters. ``enqueue`` is exactly
:func:`calbridge.jobs.enqueue` with a ``coalesce_key`` (``tests/webhooks`` checks the two
agree): at most one queued job per key, an absorbed enqueue moving the queued job to the
earlier ``run_at`` and the higher priority.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE
from ..jobs import jobs as jobs_table
from ..store import schema

__all__ = ["Statements", "statements"]


@attrs.frozen
class Statements:
    """The receiver's statements for one dialect."""

    inbox: Any
    enqueue: Any
    touch_channel: Any

    def inbox_insert(self, conn: sa.Connection, **values: Any) -> int | None:
        """Record a delivery; its new id, or None for a duplicate delivery key."""
        new_id = conn.execute(self.inbox, values).scalar()
        return None if new_id is None else int(new_id)

    def enqueue_coalesced(
        self,
        conn: sa.Connection,
        kind: str,
        payload: dict[str, Any],
        *,
        coalesce_key: str,
        now: float,
        delay: float = 0.0,
    ) -> int:
        """``jobs.enqueue(conn, kind, payload, coalesce_key=key, run_at=now + delay,
        now=now)``, pre-built."""
        now_ms = int(now * 1000)
        return int(
            conn.execute(
                self.enqueue,
                {
                    "queue": DEFAULT_QUEUE,
                    "kind": kind,
                    "payload": payload,
                    "priority": 0,
                    "run_at_ms": int((now + delay) * 1000),
                    "max_attempts": DEFAULT_MAX_ATTEMPTS,
                    "coalesce_key": coalesce_key,
                    "serial_key": coalesce_key,
                    "created_ms": now_ms,
                    "updated_ms": now_ms,
                },
            ).scalar_one()
        )


@functools.cache
def statements(dialect: str) -> Statements:
    """The statements for ``dialect`` (``sqlite`` or ``postgresql``)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    inbox_t = schema.webhook_inbox
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
    j = jobs_table.c
    ins = insert(jobs_table).values(
        queue=sa.bindparam("queue", type_=j.queue.type),
        kind=sa.bindparam("kind", type_=j.kind.type),
        payload=sa.bindparam("payload", type_=j.payload.type),
        state="queued",
        priority=sa.bindparam("priority", type_=j.priority.type),
        run_at_ms=sa.bindparam("run_at_ms", type_=j.run_at_ms.type),
        attempts=0,
        max_attempts=sa.bindparam("max_attempts", type_=j.max_attempts.type),
        coalesce_key=sa.bindparam("coalesce_key", type_=j.coalesce_key.type),
        serial_key=sa.bindparam("serial_key", type_=j.serial_key.type),
        lease_token=0,
        created_ms=sa.bindparam("created_ms", type_=j.created_ms.type),
        updated_ms=sa.bindparam("updated_ms", type_=j.updated_ms.type),
    )
    enqueue = ins.on_conflict_do_update(
        index_elements=[j.coalesce_key],
        index_where=sa.text("state = 'queued'"),
        set_={
            "run_at_ms": sa.case(
                (ins.excluded.run_at_ms < j.run_at_ms, ins.excluded.run_at_ms),
                else_=j.run_at_ms,
            ),
            "priority": sa.case(
                (ins.excluded.priority < j.priority, ins.excluded.priority),
                else_=j.priority,
            ),
            "updated_ms": ins.excluded.updated_ms,
        },
    ).returning(j.id)
    ch = schema.channels.c
    touch = (
        schema.channels.update()
        .where(ch.provider == sa.bindparam("p_provider"), ch.id == sa.bindparam("p_id"))
        .values(last_notification_at=sa.bindparam("p_at", type_=ch.last_notification_at.type))
    )
    return Statements(inbox=inbox, enqueue=enqueue, touch_channel=touch)
