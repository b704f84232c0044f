"""Read-only queries of the operator console and its metrics (:mod:`calbridge.console`).

Every function takes an open SQLAlchemy ``Connection`` (``with read(engine) as conn``)
and only reads: counts and small pages over the tables the store and the job queue own,
never a secret column (tokens, channel secrets, OAuth states are not selected).
Times are returned as the tables keep them (inbox: epoch seconds; jobs: epoch ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import sqlalchemy as sa

from . import schema as t

__all__ = [
    "NOT_UNDER_MIGRATION",
    "BudgetWindow",
    "InboxBacklog",
    "JobRow",
    "JobStates",
    "account_states",
    "budget_windows",
    "channel_states",
    "inbox_backlog",
    "job_states",
    "phase_counts",
    "user_jobs",
    "users_in_phase",
]

#: the phase key of users the migration never touched (no phase on their routing row)
NOT_UNDER_MIGRATION = ""

#: the job queue's table, by name only (its module belongs to calbridge.jobs); the
#: columns read here are part of revision 0002
_jobs = sa.table(
    "jobs",
    sa.column("id", sa.BigInteger),
    sa.column("queue", sa.String),
    sa.column("kind", sa.String),
    sa.column("payload", sa.JSON),
    sa.column("state", sa.String),
    sa.column("run_at_ms", sa.BigInteger),
    sa.column("attempts", sa.Integer),
    sa.column("max_attempts", sa.Integer),
    sa.column("coalesce_key", sa.String),
    sa.column("serial_key", sa.String),
    sa.column("last_error", sa.Text),
)


def _users() -> Any:
    """Every app user: holding an account or a routing row (one column, ``app_user_id``)."""
    return sa.union(
        sa.select(t.accounts.c.app_user_id), sa.select(t.routing_state.c.app_user_id)
    ).subquery("users")


def phase_counts(conn: sa.Connection) -> dict[str, int]:
    """Users per migration phase; :data:`NOT_UNDER_MIGRATION` counts users without one."""
    users = _users()
    r = t.routing_state.c
    phase = sa.func.coalesce(r.phase, NOT_UNDER_MIGRATION)
    query = (
        sa.select(phase, sa.func.count())
        .select_from(users.outerjoin(t.routing_state, r.app_user_id == users.c.app_user_id))
        .group_by(phase)
    )
    return {str(p or NOT_UNDER_MIGRATION): int(n) for p, n in conn.execute(query)}


def users_in_phase(
    conn: sa.Connection, phase: str, *, search: str = "", limit: int = 100, offset: int = 0
) -> list[str]:
    """App user ids in ``phase`` (:data:`NOT_UNDER_MIGRATION`: users without one), sorted;
    ``search`` keeps those whose id contains it."""
    users = _users()
    r = t.routing_state.c
    query = (
        sa.select(users.c.app_user_id)
        .select_from(users.outerjoin(t.routing_state, r.app_user_id == users.c.app_user_id))
        .where(sa.func.coalesce(r.phase, NOT_UNDER_MIGRATION) == phase)
        .order_by(users.c.app_user_id)
        .limit(limit)
        .offset(offset)
    )
    if search:
        query = query.where(users.c.app_user_id.contains(search, autoescape=True))
    return [str(u) for (u,) in conn.execute(query)]


@attrs.frozen(kw_only=True)
class JobRow:
    """One job as the console shows it (its payload is secret-free by contract)."""

    id: int
    queue: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    run_at_ms: int
    payload: dict[str, Any]
    last_error: str | None


def user_jobs(
    conn: sa.Connection,
    app_user_id: str,
    account_ids: Sequence[str],
    *,
    states: Sequence[str] = ("queued", "running", "dead"),
    limit: int = 50,
) -> list[JobRow]:
    """Jobs about one user: their payload names the user (``app_user_id``) or one of the
    user's accounts (``account``, ``account_id``). Newest first."""
    j = _jobs.c
    names = [app_user_id, *account_ids]
    text = sa.cast(j.payload, sa.Text)
    query = (
        sa.select(_jobs)
        .where(j.state.in_(list(states)))
        .where(sa.or_(*(text.contains(n, autoescape=True) for n in names)))
        .order_by(j.id.desc())
        .limit(limit * 4)  # the text match is loose; the payload check below is exact
    )
    out: list[JobRow] = []
    for row in conn.execute(query):
        payload = dict(row.payload or {})
        if payload.get("app_user_id") != app_user_id and not (
            {payload.get("account"), payload.get("account_id")} & set(account_ids)
        ):
            continue
        out.append(
            JobRow(
                id=int(row.id),
                queue=str(row.queue),
                kind=str(row.kind),
                state=str(row.state),
                attempts=int(row.attempts),
                max_attempts=int(row.max_attempts),
                run_at_ms=int(row.run_at_ms),
                payload=payload,
                last_error=row.last_error,
            )
        )
        if len(out) >= limit:
            break
    return out


@attrs.frozen(kw_only=True)
class JobStates:
    """Jobs of one queue, kind and state: how many, how many of them were claimed before
    (``retried``: a queued job claimed before failed, or its worker died), and the oldest
    ``run_at`` among them."""

    queue: str
    kind: str
    state: str
    count: int
    retried: int
    oldest_run_at_ms: int | None


def job_states(conn: sa.Connection) -> list[JobStates]:
    """Job counts per queue, kind and state, with each group's oldest ``run_at`` (ms)."""
    j = _jobs.c
    query = sa.select(
        j.queue,
        j.kind,
        j.state,
        sa.func.count(),
        sa.func.sum(sa.case((j.attempts > 0, 1), else_=0)),
        sa.func.min(j.run_at_ms),
    ).group_by(j.queue, j.kind, j.state)
    return [
        JobStates(
            queue=str(q),
            kind=str(k),
            state=str(s),
            count=int(n),
            retried=int(retried or 0),
            oldest_run_at_ms=None if oldest is None else int(oldest),
        )
        for q, k, s, n, retried, oldest in conn.execute(query)
    ]


@attrs.frozen(kw_only=True)
class InboxBacklog:
    """A provider's webhook inbox: rows waiting, rows processed (kept until purged), the
    oldest waiting row's receipt time and the newest row's (epoch seconds)."""

    provider: str
    pending: int
    processed: int
    oldest_pending_at: int | None
    newest_received_at: int | None


def inbox_backlog(conn: sa.Connection) -> list[InboxBacklog]:
    """The webhook inbox per provider."""
    w = t.webhook_inbox.c
    waiting = w.processed_at.is_(None)
    query = sa.select(
        w.provider,
        sa.func.sum(sa.case((waiting, 1), else_=0)),
        sa.func.sum(sa.case((waiting, 0), else_=1)),
        sa.func.min(sa.case((waiting, w.received_at), else_=None)),
        sa.func.max(w.received_at),
    ).group_by(w.provider)
    return [
        InboxBacklog(
            provider=str(p),
            pending=int(pending or 0),
            processed=int(done or 0),
            oldest_pending_at=None if oldest is None else int(oldest),
            newest_received_at=None if newest is None else int(newest),
        )
        for p, pending, done, oldest, newest in conn.execute(query)
    ]


def channel_states(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """Change channels per (provider, health)."""
    c = t.channels.c
    query = sa.select(c.provider, c.health, sa.func.count()).group_by(c.provider, c.health)
    return {(str(p), str(h)): int(n) for p, h, n in conn.execute(query)}


def account_states(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """Accounts per (provider, status)."""
    a = t.accounts.c
    query = sa.select(a.provider, a.status, sa.func.count()).group_by(a.provider, a.status)
    return {(str(p), str(s)): int(n) for p, s, n in conn.execute(query)}


@attrs.frozen(kw_only=True)
class BudgetWindow:
    """One window of an application's shared rate budget: the grants its stored slots
    hold (the window's last slots as of its last change) and its pause."""

    provider: str
    app: str
    window: str
    grants: int
    paused_until_ms: int
    updated_ms: int


def budget_windows(conn: sa.Connection) -> list[BudgetWindow]:
    """Every rate-budget window row (the ``app`` column is a client id, not a secret)."""
    b = t.rate_budget.c
    query = sa.select(b.provider, b.app, b.window, b.slots, b.paused_until_ms, b.updated_ms)
    out = []
    for provider, app, window, slots, paused, updated in conn.execute(query):
        grants = sum(int(s[1]) for s in (slots or []) if isinstance(s, list) and len(s) > 1)
        out.append(
            BudgetWindow(
                provider=str(provider),
                app=str(app),
                window=str(window),
                grants=grants,
                paused_until_ms=int(paused or 0),
                updated_ms=int(updated or 0),
            )
        )
    return out
