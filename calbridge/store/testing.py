"""Database fixtures shared by the store, auth and job suites (SQLite and PostgreSQL).

Use them from a test directory's ``conftest.py``::

    from calbridge.store.testing import db_url, engine, fresh_postgres_url

    __all__ = ["db_url", "engine", "fresh_postgres_url"]

``db_url`` is parametrised over ``sqlite`` and ``postgres``. The PostgreSQL half needs
``CALBRIDGE_TEST_POSTGRES_URL`` (``scripts/with-postgres.sh`` / ``make test`` set it); each
test gets a fresh database on that server. Without the variable the PostgreSQL half is
skipped locally, and FAILS under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from calbridge.store import create_engine

__all__ = ["BACKENDS", "db_url", "engine", "fresh_postgres_url", "postgres_base_url"]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def postgres_base_url() -> str:
    """The server URL from the environment; skip (locally) or fail (CI) without it."""
    url = os.environ.get("CALBRIDGE_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "CALBRIDGE_TEST_POSTGRES_URL is not set under CI=true: run the suite through "
                "scripts/with-postgres.sh (make test)"
            )
        pytest.skip("PostgreSQL half: run through scripts/with-postgres.sh (make test)")
    return url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A URL of a new, empty PostgreSQL database, dropped after the test."""
    base = sa.engine.make_url(postgres_base_url())
    name = f"cb_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> str:
    """A URL of an empty database: a SQLite file in ``tmp_path`` or a fresh PostgreSQL DB."""
    if request.param == "sqlite":
        return f"sqlite:///{os.fspath(tmp_path)}/calbridge.db"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated engine on ``db_url``, disposed after the test."""
    eng = create_engine(db_url, upgrade=True)
    try:
        yield eng
    finally:
        eng.dispose()
