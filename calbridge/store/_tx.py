"""Units of work on a calbridge database: one code path for SQLite and PostgreSQL.

Every unit of work runs in :func:`write` or :func:`read`::

    with write(engine) as conn:          # SQLite: BEGIN IMMEDIATE (one writer, no deadlock)
        conn.execute(table.insert().values(...))
    with read(engine) as conn:           # SQLite: BEGIN (deferred; a consistent snapshot)
        rows = conn.execute(sa.select(table)).all()

with what statements need to know of the dialect (:func:`is_postgres`,
:func:`dialect_insert`, :func:`database_now`) and of SQLite's WAL. How an engine is
opened (URLs, pools, the SQLite connection that lets :func:`write` begin IMMEDIATE, the
migrations run on open) is :mod:`calbridge.store._engine`'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeAlias

import sqlalchemy as sa

__all__ = [
    "PG_NOW_SQL",
    "WRITE_OPTION",
    "Connection",
    "DatabaseError",
    "Engine",
    "checkpoint_wal",
    "database_now",
    "defer_wal_checkpoint",
    "dialect_insert",
    "is_locked",
    "is_postgres",
    "is_sqlite",
    "read",
    "write",
]

#: the execution option :func:`write` sets; a SQLite engine begins such a transaction
#: with ``BEGIN IMMEDIATE``
WRITE_OPTION: Final = "calbridge_write"


def is_sqlite(engine: sa.Engine | sa.Connection) -> bool:
    """True for a SQLite engine or connection."""
    return engine.dialect.name == "sqlite"


def is_postgres(engine: sa.Engine | sa.Connection) -> bool:
    """True for a PostgreSQL engine or connection."""
    return engine.dialect.name == "postgresql"


#: the database's clock on PostgreSQL, epoch seconds (``clock_timestamp()``: read when the
#: statement runs, not when the transaction began)
PG_NOW_SQL: Final = "extract(epoch from clock_timestamp())"


def database_now(conn: sa.Connection) -> float:
    """Epoch seconds by the database's clock on PostgreSQL (processes on hosts with skewed
    clocks agree on it), by the system clock on SQLite (one host)."""
    if is_postgres(conn):
        return float(conn.execute(sa.text(f"SELECT {PG_NOW_SQL}")).scalar_one())
    return time.time()


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT of ``conn``'s dialect, with ``on_conflict_do_nothing/_do_update``."""
    from sqlalchemy.dialects import postgresql, sqlite

    if is_postgres(conn):
        return postgresql.insert(table)
    return sqlite.insert(table)


@contextmanager
def write(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction: committed on success, rolled back on an exception.

    On SQLite it starts with ``BEGIN IMMEDIATE`` (waits up to the busy timeout for the
    single write lock). Keep it short: never await network I/O inside.
    """
    with engine.connect() as raw:
        conn = raw.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@contextmanager
def read(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A read-only transaction (a consistent snapshot on SQLite WAL); always rolled back."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            yield conn
        finally:
            trans.rollback()


#: a connection in a :func:`read` or :func:`write` transaction, for code outside the
#: store that passes one on to repository methods (``conn=``) without speaking SQL
Connection: TypeAlias = sa.Connection
#: an engine from :func:`create_engine`
Engine: TypeAlias = sa.Engine
#: any error the database or its driver raised (SQLAlchemy wraps the driver's)
DatabaseError: TypeAlias = sa.exc.SQLAlchemyError


def is_locked(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (a writer waited out the busy timeout under
    heavy load: retrying the transaction may succeed)."""
    return isinstance(exc, sa.exc.OperationalError) and "locked" in str(exc.orig).lower()


def defer_wal_checkpoint(conn: sa.Connection, pages: int) -> bool:
    """SQLite: let the WAL grow to ``pages`` before a commit checkpoints it, for this
    connection (a process then checkpoints with :func:`checkpoint_wal` off the request
    path). True on SQLite; PostgreSQL has nothing to do (False)."""
    if not is_sqlite(conn):
        return False
    conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {int(pages)}")
    return True


def checkpoint_wal(engine: sa.Engine) -> None:
    """SQLite: copy the WAL back into the database, PASSIVE-ly (never blocking writers)."""
    if not is_sqlite(engine):
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
