"""Engines and transactions: one code path for SQLite (embedded) and PostgreSQL.

``create_engine(url)`` accepts ``sqlite:///path`` (default ``./calbridge.db``) and
``postgresql+psycopg://user@host/db``. Every unit of work runs in :func:`write` or
:func:`read`::

    engine = create_engine("sqlite:///calbridge.db")
    with write(engine) as conn:          # SQLite: BEGIN IMMEDIATE (one writer, no deadlock)
        conn.execute(table.insert().values(...))
    with read(engine) as conn:           # SQLite: BEGIN (deferred; a consistent snapshot)
        rows = conn.execute(sa.select(table)).all()

SQLite connections run in WAL mode with ``synchronous=FULL`` (a committed row survives a
power loss, so a 2xx promised to a webhook sender holds), ``foreign_keys=ON`` and a busy
timeout; writers take the write lock when the transaction starts (``BEGIN IMMEDIATE``),
so a read-then-write transaction never fails half-way with ``SQLITE_BUSY``.
PostgreSQL uses a pooled engine (``pool_pre_ping``) with ordinary READ COMMITTED
transactions; take row locks with ``SELECT ... FOR UPDATE`` where needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeAlias

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from calbridge.errors import ConfigurationError, StoreError

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Connection",
    "DatabaseError",
    "Engine",
    "checkpoint_wal",
    "create_engine",
    "defer_wal_checkpoint",
    "is_locked",
    "is_postgres",
    "is_sqlite",
    "read",
    "require_existing",
    "resolve_url",
    "write",
]

#: the embedded default: one SQLite file in the working directory
DEFAULT_URL: Final = "sqlite:///./calbridge.db"
#: environment variable naming the database when no URL is passed
ENV_URL: Final = "CALBRIDGE_DATABASE_URL"
#: how long a SQLite writer waits for the write lock before failing
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

_WRITE_OPTION: Final = "calbridge_write"


def resolve_url(url: str | None = None) -> str:
    """The database URL: ``url``, else ``$CALBRIDGE_DATABASE_URL``, else ``./calbridge.db``."""
    return url or os.environ.get(ENV_URL) or DEFAULT_URL


def require_existing(url: str | None = None) -> None:
    """Raise :class:`~calbridge.errors.StoreError` when ``url`` names a SQLite file that
    does not exist (read-only commands use it so that they never create a database).

    PostgreSQL databases are never created by calbridge, so there is nothing to check.
    """
    text = resolve_url(url)
    try:
        parsed = make_url(text)
    except sa.exc.ArgumentError:
        return  # create_engine reports the malformed URL
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or os.path.isfile(database):
        return
    raise StoreError(
        f"no calbridge database at {os.path.abspath(database)}: check the database URL "
        f"(--database-url, {ENV_URL} or database_url in the --config file); "
        "`calbridge db upgrade` creates a new one"
    )


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


def create_engine(
    url: str | None = None,
    *,
    upgrade: bool | None = None,
    pool_size: int = 5,
    echo: bool = False,
    must_exist: bool = False,
) -> sa.Engine:
    """An engine for ``url`` (see :func:`resolve_url`), configured for calbridge.

    Args:
        url: ``sqlite:///path`` or ``postgresql+psycopg://...``.
        upgrade: run the Alembic migrations to head now. The default (None) upgrades an
            embedded SQLite file automatically and leaves PostgreSQL to
            ``calbridge db upgrade`` (a deploy step).
        pool_size: PostgreSQL pool size (connections kept open per process).
        echo: log SQL (never use with real data: parameters are logged).
        must_exist: refuse a SQLite file that does not exist instead of creating it
            (see :func:`require_existing`).

    Raises:
        ConfigurationError: the URL is not a SQLite or ``postgresql+psycopg`` URL.
        StoreError: ``must_exist`` and the SQLite file does not exist.
    """
    text = resolve_url(url)
    if must_exist:
        require_existing(text)
    try:
        parsed = make_url(text)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            f"{ENV_URL} / database URL is not a valid SQLAlchemy URL: {exc}"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(parsed, echo=echo)
    elif backend == "postgresql":
        if parsed.get_driver_name() != "psycopg":
            raise ConfigurationError(
                "PostgreSQL URLs must use the psycopg 3 driver: postgresql+psycopg://... "
                "(install calbridge[postgres])"
            )
        engine = sa.create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=1800,
            echo=echo,
        )
    else:
        raise ConfigurationError(
            f"unsupported database {backend!r}: use sqlite:///path or postgresql+psycopg://..."
        )
    if upgrade is None:
        upgrade = backend == "sqlite"
    if upgrade:
        from ._migrate import upgrade as run_upgrade

        run_upgrade(engine)
    return engine


def _sqlite_engine(parsed: sa.URL, *, echo: bool) -> sa.Engine:
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise ConfigurationError(
            "calbridge needs a SQLite file (sqlite:///path/to/calbridge.db), not :memory:, "
            "so that several connections and processes share one database"
        )
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"the directory of the SQLite database does not exist: {directory}"
        )
    engine = sa.create_engine(
        parsed,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        echo=echo,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # take transaction control away from the sqlite3 module: we emit BEGIN ourselves
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(_WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


@contextmanager
def write(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction: committed on success, rolled back on an exception.

    On SQLite it starts with ``BEGIN IMMEDIATE`` (waits up to the busy timeout for the
    single write lock). Keep it short: never await network I/O inside.
    """
    with engine.connect() as raw:
        conn = raw.execution_options(**{_WRITE_OPTION: True})
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


def engine_url(engine: Engine, *, with_password: bool = False) -> str:
    """The engine's database URL, its password shown as ``***`` unless ``with_password``
    (for a child process's environment only: never print or log that form)."""
    return engine.url.render_as_string(hide_password=not with_password)
