"""Engine, transactions and migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from calbridge.errors import ConfigurationError
from calbridge.store import (
    create_engine,
    current_revisions,
    head_revisions,
    is_sqlite,
    metadata,
    read,
    resolve_url,
    schema,
    write,
)


def test_core_revision_is_first() -> None:
    assert "0001_core" in _all_revisions()


def _all_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from calbridge.store import alembic_config

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def test_migrated_schema_matches_metadata(engine: sa.Engine) -> None:
    assert current_revisions(engine) == head_revisions()
    mine = {t.name for t in metadata.sorted_tables if t.name in _core_tables()}
    with read(engine) as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        names = set(sa.inspect(conn).get_table_names())
    assert mine <= names
    relevant = [d for d in diffs if _table_of(d) in _core_tables()]
    assert relevant == []


def _core_tables() -> set[str]:
    return {t.name for t in vars(schema).values() if isinstance(t, sa.Table)}


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item if isinstance(item, tuple) else ():
        if isinstance(part, sa.Table):
            return part.name
        table = getattr(part, "table", None)
        if isinstance(table, sa.Table):
            return table.name
    return None


def test_write_commits_and_rolls_back(engine: sa.Engine) -> None:
    row = {"provider": "p", "status": "paused", "updated_at": 1}
    with write(engine) as conn:
        conn.execute(schema.provider_status.insert().values(**row))

    def failing() -> None:
        with write(engine) as conn:
            conn.execute(schema.provider_status.delete())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        failing()
    with read(engine) as conn:
        assert conn.execute(sa.select(schema.provider_status.c.provider)).scalars().all() == ["p"]


def test_upgrade_is_idempotent(db_url: str) -> None:
    for _ in range(2):
        eng = create_engine(db_url, upgrade=True)
        assert current_revisions(eng) == head_revisions()
        eng.dispose()


def test_sqlite_pragmas_and_auto_upgrade(tmp_path: Path) -> None:
    eng = create_engine(f"sqlite:///{tmp_path}/auto.db")  # embedded: upgraded on open
    try:
        assert is_sqlite(eng)
        assert current_revisions(eng) == head_revisions()
        with read(eng) as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        eng.dispose()


def test_sqlite_writers_serialise_with_begin_immediate(tmp_path: Path) -> None:
    """A read-then-write transaction waits for the lock instead of failing with BUSY."""
    eng = create_engine(f"sqlite:///{tmp_path}/busy.db")
    table = schema.provider_status
    with write(eng) as conn:
        conn.execute(table.insert().values(provider="p", status="0", updated_at=0))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(20):
                with write(eng) as conn:
                    value = int(conn.execute(sa.select(table.c.status)).scalar_one())
                    time.sleep(0.001)
                    conn.execute(table.update().values(status=str(value + 1)))
        except BaseException as exc:  # pragma: no cover - the failure being tested
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with read(eng) as conn:
        assert conn.execute(sa.select(table.c.status)).scalar_one() == "80"
    eng.dispose()


@pytest.mark.parametrize(
    "url",
    ["mysql://x/y", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://u@h/db", "not a url"],
)
def test_bad_urls_fail_closed(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_engine(url)


def test_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALBRIDGE_DATABASE_URL", raising=False)
    assert resolve_url() == "sqlite:///./calbridge.db"
    monkeypatch.setenv("CALBRIDGE_DATABASE_URL", "sqlite:///x.db")
    assert resolve_url() == "sqlite:///x.db"
    assert resolve_url("sqlite:///y.db") == "sqlite:///y.db"


def test_opening_waits_out_a_writer_of_a_database_not_yet_in_wal(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once, without its busy handler, while another
    connection writes to a rollback-journal database: opening waits for that writer."""
    import sqlite3

    path = tmp_path / "calbridge.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    releaser = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    releaser.start()
    try:
        engine = create_engine(f"sqlite:///{path}", upgrade=False)
        started = time.monotonic()
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        waited = time.monotonic() - started
    finally:
        releaser.join()
        other.close()
    assert mode == "wal"
    assert waited >= 0.3
    engine.dispose()


def test_concurrent_first_open_from_several_processes(db_url: str) -> None:
    """Four processes migrating one empty database at once: one migrates, all succeed."""
    import subprocess
    import sys

    code = (
        "import sys; from calbridge.store import create_engine, current_revisions, "
        "head_revisions; e = create_engine(sys.argv[1], upgrade=True); "
        "assert current_revisions(e) == head_revisions(); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    eng = create_engine(db_url, upgrade=False)
    assert current_revisions(eng) == head_revisions()
    eng.dispose()
