"""Shared plumbing of the repository: transactions, upserts, clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from ._engine import dialect_insert, read, write
from .vault import Vault

__all__ = ["Clock", "RepoBase"]

Clock = Callable[[], float]


class RepoBase:
    """Engine + vault + clock; every method takes an optional ``conn`` to join a transaction."""

    def __init__(self, engine: sa.Engine, vault: Vault | None = None, *, clock: Clock = time.time):
        self.engine = engine
        self._vault = vault
        self.clock = clock

    @property
    def has_vault(self) -> bool:
        """True when the store was given a token vault."""
        return self._vault is not None

    @property
    def vault(self) -> Vault:
        """The token vault (ConfigurationError when none was configured)."""
        if self._vault is None:
            from calbridge.errors import ConfigurationError

            raise ConfigurationError(
                "this store has no token vault: set CALBRIDGE_KEYS (see docs/security.md)"
            )
        return self._vault

    def now(self) -> int:
        """Now, in integer epoch seconds."""
        return int(self.clock())

    def now_ms(self) -> int:
        """Now, in integer epoch milliseconds."""
        return int(self.clock() * 1000)

    @contextmanager
    def _tx(self, conn: sa.Connection | None, *, writing: bool = True) -> Iterator[sa.Connection]:
        if conn is not None:
            yield conn
            return
        with (write if writing else read)(self.engine) as own:
            yield own

    @staticmethod
    def _insert(conn: sa.Connection, table: sa.Table) -> Any:
        """A dialect insert supporting ``on_conflict_do_update/_do_nothing``."""
        return dialect_insert(conn, table)
