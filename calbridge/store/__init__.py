"""calbridge's state store: SQLite by default, PostgreSQL for many workers.

Engine and transactions (see ``docs/store.md``)::

    from calbridge.store import create_engine, metadata, read, write

    engine = create_engine()                  # ./calbridge.db, migrated on open
    with write(engine) as conn:               # BEGIN IMMEDIATE on SQLite
        ...

All tables live on :data:`metadata`; migrations are in ``calbridge/store/migrations``.
"""

from __future__ import annotations

from . import schema
from ._engine import (
    DEFAULT_URL,
    ENV_URL,
    create_engine,
    is_postgres,
    is_sqlite,
    read,
    resolve_url,
    write,
)
from ._migrate import MIGRATIONS_DIR, alembic_config, current_revisions, head_revisions, upgrade
from .schema import metadata

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "MIGRATIONS_DIR",
    "alembic_config",
    "create_engine",
    "current_revisions",
    "head_revisions",
    "is_postgres",
    "is_sqlite",
    "metadata",
    "read",
    "resolve_url",
    "schema",
    "upgrade",
    "write",
]
