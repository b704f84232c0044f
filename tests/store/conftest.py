"""Fixtures of the store suite (parametrised over SQLite and PostgreSQL)."""

from __future__ import annotations

from calbridge.store.testing import db_url, engine, fresh_postgres_url

__all__ = ["db_url", "engine", "fresh_postgres_url"]
