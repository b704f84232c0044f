"""Opening a calbridge database: SQLite (embedded) or PostgreSQL, one URL either way.

``create_engine(url)`` accepts ``sqlite:///path`` (default ``./calbridge.db``, or
``$CALBRIDGE_DATABASE_URL``) and ``postgresql+psycopg://user@host/db``, and migrates an
embedded SQLite file to the newest schema on open (:mod:`calbridge.store._migrate`).
Units of work on the engine run in :func:`calbridge.store.write` / :func:`~calbridge.store.read`
(:mod:`calbridge.store._tx`).

SQLite connections run in WAL mode with ``synchronous=FULL`` (a committed row survives a
power loss, so a 2xx promised to a webhook sender holds), ``foreign_keys=ON`` and a busy
timeout; writers take the write lock when the transaction starts (``BEGIN IMMEDIATE``),
so a read-then-write transaction never fails half-way with ``SQLITE_BUSY``.
PostgreSQL uses a pooled engine (``pool_pre_ping``) with ordinary READ COMMITTED
transactions; take row locks with ``SELECT ... FOR UPDATE`` where needed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from calbridge.errors import ConfigurationError, StoreError

from ._migrate import upgrade as run_upgrade
from ._tx import WRITE_OPTION, Engine

__all__ = [
    "DEFAULT_URL",
    "ENV_URL",
    "SQLITE_BUSY_TIMEOUT_MS",
    "create_engine",
    "engine_url",
    "require_existing",
    "resolve_url",
]

#: the embedded default: one SQLite file in the working directory
DEFAULT_URL: Final = "sqlite:///./calbridge.db"
#: environment variable naming the database when no URL is passed
ENV_URL: Final = "CALBRIDGE_DATABASE_URL"
#: how long a SQLite writer waits for the write lock before failing
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000


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
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _enable_wal(cur: Any) -> None:
    """Switch the database to WAL, waiting out a writer of another process.

    SQLite answers ``PRAGMA journal_mode = WAL`` with "database is locked" at once, without
    its busy handler, while another connection holds a write lock on a database still in
    rollback-journal mode (as when several processes open a new database together), so the
    wait the busy timeout promises is made here, within that same timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def engine_url(engine: Engine, *, with_password: bool = False) -> str:
    """The engine's database URL, its password shown as ``***`` unless ``with_password``
    (for a child process's environment only: never print or log that form)."""
    return engine.url.render_as_string(hide_password=not with_password)
