"""calbridge's state store: SQLite by default, PostgreSQL for many workers.

Engine and transactions (see ``docs/store.md``)::

    from calbridge.store import Store, Vault, create_engine, read, write

    engine = create_engine()                  # ./calbridge.db, migrated on open
    store = Store(engine, Vault.from_env())   # keys from CALBRIDGE_KEYS
    account = store.upsert_account(app_user_id="u1", provider="google", provider_account_id="g1")
    with write(engine) as conn:               # BEGIN IMMEDIATE on SQLite
        store.audit("router", "route", app_user_id="u1", conn=conn)

All tables live on :data:`metadata`; migrations are in ``calbridge/store/migrations``.
"""

from __future__ import annotations

from . import schema
from ._data import event_bounds
from ._engine import (
    DEFAULT_URL,
    ENV_URL,
    PG_NOW_SQL,
    create_engine,
    database_now,
    dialect_insert,
    is_postgres,
    is_sqlite,
    read,
    resolve_url,
    write,
)
from ._migrate import MIGRATIONS_DIR, alembic_config, current_revisions, head_revisions, upgrade
from ._offload import DB_THREADS_ENV, offload
from ._records import (
    AuditEntry,
    ChannelRecord,
    CredentialRecord,
    IdMapEntry,
    InboxItem,
    OAuthStateRecord,
    ProviderStatus,
    RotationReport,
    RoutingState,
)
from ._store import StaleWriteError, Store
from .schema import metadata
from .vault import ENV_KEYS, KeyRing, Vault, generate_key, row_aad

__all__ = [
    "DB_THREADS_ENV",
    "DEFAULT_URL",
    "ENV_KEYS",
    "ENV_URL",
    "MIGRATIONS_DIR",
    "PG_NOW_SQL",
    "AuditEntry",
    "ChannelRecord",
    "CredentialRecord",
    "IdMapEntry",
    "InboxItem",
    "KeyRing",
    "OAuthStateRecord",
    "ProviderStatus",
    "RotationReport",
    "RoutingState",
    "StaleWriteError",
    "Store",
    "Vault",
    "alembic_config",
    "create_engine",
    "current_revisions",
    "database_now",
    "dialect_insert",
    "event_bounds",
    "generate_key",
    "head_revisions",
    "is_postgres",
    "is_sqlite",
    "metadata",
    "offload",
    "read",
    "resolve_url",
    "row_aad",
    "schema",
    "upgrade",
    "write",
]
