"""Fixtures of the change-pipeline suite (store-touching tests run on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from calbridge.store.testing import db_url, engine, fresh_postgres_url

__all__ = ["db_url", "engine", "fresh_postgres_url", "migrated_url", "sqlite_url"]


@pytest.fixture
def migrated_url(engine: sa.Engine, db_url: str) -> str:
    """A migrated database URL (SQLite file or fresh PostgreSQL database)."""
    return db_url


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A SQLite file URL only (for the slower, store-independent tests)."""
    return f"sqlite:///{tmp_path}/calbridge.db"
