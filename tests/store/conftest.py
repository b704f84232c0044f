"""Fixtures of the store suite (parametrised over SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from calbridge.store import KeyRing, Store, Vault, generate_key
from calbridge.store.testing import db_url, engine, fresh_postgres_url

__all__ = ["db_url", "engine", "fresh_postgres_url", "key_a", "key_b", "store", "vault"]


@pytest.fixture
def key_a() -> str:
    return generate_key()


@pytest.fixture
def key_b() -> str:
    return generate_key()


@pytest.fixture
def vault(key_a: str) -> Vault:
    return Vault(KeyRing.of([("ka", key_a)]))


@pytest.fixture
def store(engine: sa.Engine, vault: Vault) -> Store:
    return Store(engine, vault)
