"""Fixtures of the job-queue suite (every test runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from calbridge.jobs import JobQueue
from calbridge.store.testing import db_url, engine, fresh_postgres_url
from tests.jobs.jobsupport import FakeClock, effects_metadata

__all__ = ["clock", "db_url", "engine", "fresh_postgres_url", "queue", "worker_db"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(engine: sa.Engine, clock: FakeClock) -> JobQueue:
    """A queue on a migrated database with a fake clock."""
    return JobQueue(engine, clock=clock)


@pytest.fixture
def worker_db(engine: sa.Engine) -> sa.Engine:
    """A migrated database with the handlers' effects table (for worker subprocesses)."""
    effects_metadata.create_all(engine)
    return engine
