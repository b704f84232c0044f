"""calbridge's state store: SQLite by default, PostgreSQL for many workers.

Engine and transactions (see ``docs/store.md``)::

    from calbridge.store import Store, Vault, create_engine, read, write

    engine = create_engine()                  # ./calbridge.db, migrated on open
    store = Store(engine, Vault.from_env())   # keys from CALBRIDGE_KEYS
    account = store.accounts.upsert_account(
        app_user_id="u1", provider="google", provider_account_id="g1"
    )
    with write(engine) as conn:               # BEGIN IMMEDIATE on SQLite
        store.audit_log.audit("router", "route", app_user_id="u1", conn=conn)

The store holds one repository per responsibility (``store.accounts``,
``store.credentials``, ``store.routing``, ``store.events``, ``store.ids``,
``store.channels``, ``store.audit_log``, ``store.feed``, ``store.keys``); callers name the
repository whose tables they read or write.

All tables live on :data:`metadata`; migrations are in ``calbridge/store/migrations``.
"""

from __future__ import annotations

from . import jobs, schema
from ._accounts import AccountRepository
from ._audit import AuditRepository
from ._channels import ChannelRepository
from ._counts import CountKey, CountRows, CountTotal
from ._credentials import CredentialRepository
from ._engine import DEFAULT_URL, ENV_URL, create_engine, engine_url, resolve_url
from ._events import EventRepository, event_bounds
from ._feed import FeedRecord, FeedRepository
from ._idmap import IdMapRepository
from ._limits import BudgetChange, BudgetRows, BudgetWindowRow, CircuitRow, CircuitView
from ._migrate import MIGRATIONS_DIR, alembic_config, current_revisions, head_revisions, upgrade
from ._offload import DB_THREADS_ENV, offload
from ._records import (
    AccountFactsRecord,
    AuditEntry,
    ChannelRecord,
    CredentialRecord,
    IdMapEntry,
    InboxItem,
    OAuthStateRecord,
    ProviderStatus,
    RotationReport,
    RoutingState,
    UserFactsRecord,
)
from ._rotate import KeyRotation
from ._routing import RoutingRepository, StaleWriteError
from ._store import Store, StoreRuntime
from ._tx import (
    PG_NOW_SQL,
    Connection,
    DatabaseError,
    Engine,
    checkpoint_wal,
    database_now,
    defer_wal_checkpoint,
    dialect_insert,
    is_locked,
    is_postgres,
    is_sqlite,
    read,
    write,
)
from .schema import metadata
from .vault import ENV_KEYS, KeyRing, Vault, generate_key, row_aad

__all__ = [
    "DB_THREADS_ENV",
    "DEFAULT_URL",
    "ENV_KEYS",
    "ENV_URL",
    "MIGRATIONS_DIR",
    "PG_NOW_SQL",
    "AccountFactsRecord",
    "AccountRepository",
    "AuditEntry",
    "AuditRepository",
    "BudgetChange",
    "BudgetRows",
    "BudgetWindowRow",
    "ChannelRecord",
    "ChannelRepository",
    "CircuitRow",
    "CircuitView",
    "Connection",
    "CountKey",
    "CountRows",
    "CountTotal",
    "CredentialRecord",
    "CredentialRepository",
    "DatabaseError",
    "Engine",
    "EventRepository",
    "FeedRecord",
    "FeedRepository",
    "IdMapEntry",
    "IdMapRepository",
    "InboxItem",
    "KeyRing",
    "KeyRotation",
    "OAuthStateRecord",
    "ProviderStatus",
    "RotationReport",
    "RoutingRepository",
    "RoutingState",
    "StaleWriteError",
    "Store",
    "StoreRuntime",
    "UserFactsRecord",
    "Vault",
    "alembic_config",
    "checkpoint_wal",
    "create_engine",
    "current_revisions",
    "database_now",
    "defer_wal_checkpoint",
    "dialect_insert",
    "engine_url",
    "event_bounds",
    "generate_key",
    "head_revisions",
    "is_locked",
    "is_postgres",
    "is_sqlite",
    "jobs",
    "metadata",
    "offload",
    "read",
    "resolve_url",
    "row_aad",
    "schema",
    "upgrade",
    "write",
]
