"""Shared plumbing of the repositories: transactions, upserts, clock.

:class:`RepoBase` holds the engine, the vault and the clock of one store; every
repository (:class:`Repository`) works through the store it belongs to, so a test that
swaps ``store.clock`` moves every repository's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa

from ._tx import dialect_insert, read, write
from .vault import Vault

__all__ = ["Clock", "RepoBase", "Repository"]

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


class Repository:
    """The SQL of one responsibility, on the engine, vault and clock of its store."""

    def __init__(self, base: RepoBase) -> None:
        self._base = base

    @property
    def engine(self) -> sa.Engine:
        """The store's engine."""
        return self._base.engine

    @property
    def vault(self) -> Vault:
        """The store's token vault (ConfigurationError when none was configured)."""
        return self._base.vault

    def now(self) -> int:
        """Now by the store's clock, in integer epoch seconds."""
        return self._base.now()

    def now_ms(self) -> int:
        """Now by the store's clock, in integer epoch milliseconds."""
        return self._base.now_ms()

    def _tx(
        self, conn: sa.Connection | None, *, writing: bool = True
    ) -> AbstractContextManager[sa.Connection]:
        """``conn`` itself, or a transaction of its own (see :meth:`RepoBase._tx`)."""
        return self._base._tx(conn, writing=writing)

    @staticmethod
    def _insert(conn: sa.Connection, table: sa.Table) -> Any:
        """A dialect insert supporting ``on_conflict_do_update/_do_nothing``."""
        return dialect_insert(conn, table)
