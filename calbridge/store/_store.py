"""The store: one object per process, holding a repository per responsibility.

Methods are synchronous and short; async code awaits them through ``calbridge.store.offload``.
Each takes an optional ``conn`` so several calls (e.g. an inbox insert and a job enqueue)
share one transaction::

    with write(store.engine) as conn:
        if store.inbox_insert(..., conn=conn):
            enqueue(conn, ...)

The repositories (``store.accounts``, ``store.credentials``, ``store.routing``,
``store.events``, ``store.channels``, ``store.audit_log``, ``store.feed``, ``store.keys``)
own the SQL of their tables; the store's own method names (``store.get_account``, ...)
are those of the repositories, forwarded, as callers have used them all along.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import sqlalchemy as sa

from . import schema as t
from ._accounts import AccountRepository
from ._audit import AuditRepository
from ._base import Clock
from ._channels import ChannelRepository
from ._credentials import CredentialRepository
from ._events import EventRepository
from ._feed import FeedRepository
from ._idmap import IdMapMixin
from ._rotate import KeyRotation
from ._routing import RoutingRepository, StaleWriteError
from .vault import Vault

__all__ = ["StaleWriteError", "Store", "StoreRuntime"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Repo = TypeVar("_Repo")


class _Forward(Generic[_Repo, _P, _R]):
    """A store method that is one of its repository's: ``Store.get_account =
    _Forward("accounts", AccountRepository.get_account)`` makes ``store.get_account`` the
    bound ``store.accounts.get_account`` (typed as it is; an instance may still shadow it,
    as tests patching one store do)."""

    def __init__(self, repository: str, method: Callable[Concatenate[_Repo, _P], _R]) -> None:
        self._repository = repository
        self._name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Forward[_Repo, _P, _R]: ...

    @overload
    def __get__(self, obj: Store, owner: type[Any] | None = None) -> Callable[_P, _R]: ...

    def __get__(
        self, obj: Store | None, owner: type[Any] | None = None
    ) -> _Forward[_Repo, _P, _R] | Callable[_P, _R]:
        if obj is None:
            return self
        bound: Callable[_P, _R] = getattr(getattr(obj, self._repository), self._name)
        return bound


class Store(IdMapMixin):
    """calbridge's state: one instance per process, shared by all coroutines.

    Args:
        engine: from :func:`calbridge.store.create_engine`.
        vault: the token vault (needed for tokens, channel secrets, OAuth states).
        clock: epoch-seconds clock (inject a fake in tests; every repository reads it).

    The id map's and idempotency keys' methods (``put_id``, ``get_ids``, ``claim_key``,
    ...) are still the store's own (:mod:`calbridge.store._idmap`, being reworked for the
    atomic idempotent create); they are next to join :attr:`events`.
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
        #: push channels and the webhook inbox
        self.channels = ChannelRepository(self)
        #: the audit log
        self.audit_log = AuditRepository(self)
        #: what the application was told (:mod:`calbridge._feed`)
        self.feed = FeedRepository(self)
        #: re-encryption under the current key
        self.keys = KeyRotation(self)

    # -- accounts ---------------------------------------------------------------------
    upsert_account = _Forward("accounts", AccountRepository.upsert_account)
    get_account = _Forward("accounts", AccountRepository.get_account)
    find_account = _Forward("accounts", AccountRepository.find_account)
    account_details = _Forward("accounts", AccountRepository.account_details)
    list_accounts = _Forward("accounts", AccountRepository.list_accounts)
    set_account_status = _Forward("accounts", AccountRepository.set_account_status)
    delete_account = _Forward("accounts", AccountRepository.delete_account)
    pause_provider = _Forward("accounts", AccountRepository.pause_provider)
    resume_provider = _Forward("accounts", AccountRepository.resume_provider)
    provider_status = _Forward("accounts", AccountRepository.provider_status)
    # -- credentials ------------------------------------------------------------------
    save_tokens = _Forward("credentials", CredentialRepository.save_tokens)
    get_tokens = _Forward("credentials", CredentialRepository.get_tokens)
    swap_tokens = _Forward("credentials", CredentialRepository.swap_tokens)
    acquire_refresh_lease = _Forward("credentials", CredentialRepository.acquire_refresh_lease)
    release_refresh_lease = _Forward("credentials", CredentialRepository.release_refresh_lease)
    put_oauth_state = _Forward("credentials", CredentialRepository.put_oauth_state)
    consume_oauth_state = _Forward("credentials", CredentialRepository.consume_oauth_state)
    purge_oauth_states = _Forward("credentials", CredentialRepository.purge_oauth_states)
    rotate_keys = _Forward("keys", KeyRotation.rotate_keys)
    count_unrotated = _Forward("keys", KeyRotation.count_unrotated)
    # -- routing ----------------------------------------------------------------------
    get_routing = _Forward("routing", RoutingRepository.get_routing)
    set_routing = _Forward("routing", RoutingRepository.set_routing)
    # -- events -----------------------------------------------------------------------
    get_cursor = _Forward("events", EventRepository.get_cursor)
    set_cursor = _Forward("events", EventRepository.set_cursor)
    upsert_events = _Forward("events", EventRepository.upsert_events)
    delete_events = _Forward("events", EventRepository.delete_events)
    get_event = _Forward("events", EventRepository.get_event)
    list_events = _Forward("events", EventRepository.list_events)
    wipe_calendar = _Forward("events", EventRepository.wipe_calendar)
    # -- channels and inbox -----------------------------------------------------------
    save_channel = _Forward("channels", ChannelRepository.save_channel)
    get_channel = _Forward("channels", ChannelRepository.get_channel)
    list_channels = _Forward("channels", ChannelRepository.list_channels)
    set_channel_health = _Forward("channels", ChannelRepository.set_channel_health)
    delete_channel = _Forward("channels", ChannelRepository.delete_channel)
    inbox_insert = _Forward("channels", ChannelRepository.inbox_insert)
    inbox_mark_processed = _Forward("channels", ChannelRepository.inbox_mark_processed)
    inbox_pending = _Forward("channels", ChannelRepository.inbox_pending)
    inbox_purge = _Forward("channels", ChannelRepository.inbox_purge)
    # -- audit ------------------------------------------------------------------------
    audit = _Forward("audit_log", AuditRepository.audit)
    audit_entries = _Forward("audit_log", AuditRepository.audit_entries)

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
