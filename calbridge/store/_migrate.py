"""Alembic wiring: upgrade a database to the newest schema, report its revision.

The revision scripts live in ``calbridge/store/migrations/versions/``; every file there is
picked up (calbridge's own ``0001_core``, the job queue's ``0002_jobs``, ...). Upgrades run
inside one :func:`~calbridge.store.write` transaction: SQLite's ``BEGIN IMMEDIATE`` and a
PostgreSQL advisory lock make concurrent upgrades from several processes wait for each
other instead of racing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from ._tx import is_postgres, read, write

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revisions", "head_revisions", "upgrade"]

MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"
#: arbitrary constant key of the PostgreSQL advisory lock taken during upgrades
_PG_LOCK_KEY: Final = 0x0CA1B41D6E


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for calbridge's migrations (no ``alembic.ini`` needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revisions() -> set[str]:
    """The newest revision id(s) shipped with this calbridge."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: sa.Engine) -> set[str]:
    """The revision id(s) the database is at (empty for a new database)."""
    with read(engine) as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: sa.Engine, revision: str = "heads") -> None:
    """Migrate the database to ``revision`` (default: newest). A no-op when up to date."""
    if revision == "heads" and current_revisions(engine) == head_revisions():
        return
    with write(engine) as conn:
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)
