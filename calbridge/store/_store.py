"""The store: one object per process, holding a repository per responsibility.

Methods are synchronous and short; async code awaits them through ``calbridge.store.offload``.
Each takes an optional ``conn`` so several calls (e.g. an inbox insert and a job enqueue)
share one transaction::

    with write(store.engine) as conn:
        if store.channels.inbox_insert(..., conn=conn):
            enqueue(conn, ...)

The repositories (``store.accounts``, ``store.credentials``, ``store.routing``,
``store.events``, ``store.ids``, ``store.channels``, ``store.audit_log``, ``store.feed``,
``store.keys``) own the SQL of their tables; callers name the repository
(``store.accounts.get_account``). The store itself holds the engine, the vault and the
clock they share, and what spans repositories (:meth:`Store.erase_user`,
:meth:`Store.save_grant`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from calbridge.models import Account, AccountStatus

from . import schema as t
from ._accounts import AccountRepository
from ._audit import AuditRepository
from ._base import Clock, RepoBase
from ._channels import ChannelRepository
from ._credentials import CredentialRepository
from ._events import EventRepository
from ._feed import FeedRepository
from ._idmap import IdMapRepository
from ._rotate import KeyRotation
from ._routing import RoutingRepository, StaleWriteError
from .vault import Vault

if TYPE_CHECKING:
    from calbridge.provider import TokenGrant

__all__ = ["StaleWriteError", "Store", "StoreRuntime"]


class Store(RepoBase):
    """calbridge's state: one instance per process, shared by all coroutines.

    Args:
        engine: from :func:`calbridge.store.create_engine`.
        vault: the token vault (needed for tokens, channel secrets, OAuth states).
        clock: epoch-seconds clock (inject a fake in tests; every repository reads it).
    """

    def __init__(self, engine: sa.Engine, vault: Vault | None = None, *, clock: Clock = time.time):
        super().__init__(engine, vault, clock=clock)
        #: accounts and provider-wide pauses
        self.accounts = AccountRepository(self)
        #: sealed tokens, the refresh lease, pending OAuth states
        self.credentials = CredentialRepository(self)
        #: routing and migration state, the router's facts
        self.routing = RoutingRepository(self)
        #: sync cursors, the event cache, and a sync round's reads
        self.events = EventRepository(self)
        #: the cross-provider id map and the idempotency keys' bindings
        self.ids = IdMapRepository(self)
        #: push channels and the webhook inbox
        self.channels = ChannelRepository(self)
        #: the audit log
        self.audit_log = AuditRepository(self)
        #: what the application was told (:mod:`calbridge._feed`)
        self.feed = FeedRepository(self)
        #: re-encryption under the current key
        self.keys = KeyRotation(self)

    # -- across repositories ----------------------------------------------------------

    def erase_user(self, app_user_id: str, account_ids: Sequence[str | None]) -> None:
        """GDPR erasure of an app user's rows, in one write transaction: id map and
        idempotency keys, feed, these accounts (their tokens, channels, cursors and cache
        go with them) and the routing row. The audit log is kept."""
        with self._tx(None) as c:
            c.execute(t.id_map.delete().where(t.id_map.c.app_user_id == app_user_id))
            keys = t.idempotency_keys
            c.execute(keys.delete().where(keys.c.app_user_id == app_user_id))
            c.execute(t.app_feed.delete().where(t.app_feed.c.app_user_id == app_user_id))
            for account_id in account_ids:
                c.execute(t.accounts.delete().where(t.accounts.c.id == account_id))
            c.execute(t.routing_state.delete().where(t.routing_state.c.app_user_id == app_user_id))

    def save_grant(
        self, app_user_id: str, provider: str, grant: TokenGrant, *, method: str = "oauth"
    ) -> tuple[Account, AccountStatus | None]:
        """Store a connection, in one write transaction: ``app_user_id``'s ``provider``
        account (re-activated if it was disconnected or needed re-authorisation), its
        tokens sealed in the vault and an ``auth``/``connected`` audit entry (naming
        ``method`` unless it is ``"oauth"``). Returns the account and, when it was
        re-activated, the status it had. Every connection ends here: the OAuth callback
        after the code exchange, and :meth:`calbridge.CalBridge.connect_with_grant`."""
        detail: dict[str, Any] = {"provider": provider}
        if method != "oauth":
            detail["auth"] = method
        with self._tx(None) as conn:
            account = self.accounts.upsert_account(
                app_user_id=app_user_id,
                provider=provider,
                provider_account_id=grant.provider_account_id,
                email=grant.email,
                details=dict(grant.details),
                conn=conn,
            )
            assert account.id is not None
            self.credentials.save_tokens(account.id, grant.tokens, conn=conn)
            old: AccountStatus | None = None
            if account.status is not AccountStatus.ACTIVE:
                changed = self.accounts.set_account_status(
                    account.id, AccountStatus.ACTIVE, reason="reconnected", conn=conn
                )
                if changed is not None:
                    account, old = changed
            self.audit_log.audit(
                "auth",
                "connected",
                app_user_id=app_user_id,
                account_id=account.id,
                detail=detail,
                conn=conn,
            )
        return account, old


class StoreRuntime(Protocol):
    """The runtime seam: what code handed a runtime (:class:`calbridge._runtime.Runtime`)
    asks of it to reach calbridge's state — the store and the clock, never an engine to
    send SQL through."""

    @property
    def store(self) -> Store:
        """The process's store."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Epoch-seconds clock."""
        ...
