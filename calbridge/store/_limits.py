"""The provider limits every process shares: the rate budget's windows and the circuit
breaker's row, per provider and application (client id).

The decisions stay with their owners (:mod:`calbridge._budget` grants calls,
:mod:`calbridge._circuit_store` moves a circuit between closed, open and probing); this
module reads and changes the rows, each change one short write transaction holding the
rows' lock, timed by the store's clock (the database's on PostgreSQL, see
:func:`calbridge.store.database_now`, unless a ``clock`` is given). Synchronous: async
code calls them through :func:`calbridge.store.offload`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, Literal

import attrs
import sqlalchemy as sa

from . import schema as t
from ._tx import database_now, dialect_insert, read, write

__all__ = ["BudgetChange", "BudgetRows", "BudgetWindowRow", "CircuitRow", "CircuitView"]


def _now_ms(conn: sa.Connection, clock: Callable[[], float] | None) -> int:
    return int((clock() if clock is not None else database_now(conn)) * 1000)


# -- rate budget -----------------------------------------------------------------------


@attrs.frozen
class BudgetWindowRow:
    """One window's row of a rate budget, as stored (JSON columns as decoded)."""

    window: str
    slots: Any
    accounts: Any
    paused_until_ms: int
    pause_ms: int


class BudgetChange:
    """The rows of one budget in a write transaction, locked (:meth:`BudgetRows.change`)."""

    def __init__(
        self, conn: sa.Connection, owner: BudgetRows, now_ms: int, rows: dict[str, BudgetWindowRow]
    ) -> None:
        self._conn = conn
        self._owner = owner
        #: the store's time when the transaction began reading (epoch ms)
        self.now_ms = now_ms
        #: window name -> its row
        self.rows = rows

    def update(self, values: Mapping[str, Any], *, window: str | None = None) -> None:
        """Change every window's row (or ``window``'s) of this budget."""
        self._conn.execute(
            t.rate_budget.update().where(*self._owner.where(window)).values(**values)
        )


class BudgetRows:
    """The ``rate_budget`` rows of one provider and application."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        provider: str,
        app: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.app = app
        self._clock = clock
        self._ready = False

    def where(self, window: str | None = None) -> list[sa.ColumnElement[bool]]:
        """The rows' condition (all windows, or one)."""
        c = t.rate_budget.c
        out = [c.provider == self.provider, c.app == self.app]
        if window is not None:
            out.append(c.window == window)
        return out

    def ensure(self, windows: Iterable[str]) -> None:
        """Create the rows of ``windows`` that do not exist yet (once per process)."""
        if self._ready:
            return
        with write(self.engine) as conn:
            now = _now_ms(conn, self._clock)
            for window in windows:
                stmt = dialect_insert(conn, t.rate_budget).values(
                    provider=self.provider,
                    app=self.app,
                    window=window,
                    slots=[],
                    paused_until_ms=0,
                    pause_ms=0,
                    updated_ms=now,
                )
                conn.execute(stmt.on_conflict_do_nothing())
        self._ready = True

    def _rows(self, conn: sa.Connection) -> dict[str, BudgetWindowRow]:
        c = t.rate_budget.c
        query = sa.select(t.rate_budget).where(*self.where()).order_by(c.window).with_for_update()
        return {
            r.window: BudgetWindowRow(
                window=r.window,
                slots=r.slots,
                accounts=r.accounts,
                paused_until_ms=r.paused_until_ms,
                pause_ms=r.pause_ms,
            )
            for r in conn.execute(query)
        }

    @contextmanager
    def change(self) -> Iterator[BudgetChange]:
        """One write transaction holding the budget's rows (``FOR UPDATE`` on PostgreSQL,
        the write lock on SQLite); committed when the block ends."""
        with write(self.engine) as conn:
            now = _now_ms(conn, self._clock)
            yield BudgetChange(conn, self, now, self._rows(conn))

    def read(self) -> tuple[int, dict[str, BudgetWindowRow]]:
        """``(the store's time in epoch ms, window name -> row)``."""
        with read(self.engine) as conn:
            now = _now_ms(conn, self._clock)
            return now, self._rows(conn)


# -- circuit breaker ---------------------------------------------------------------------


@attrs.frozen
class CircuitView:
    """A shared circuit's row as read or written, and when (the store's clock)."""

    state: Literal["closed", "open"]
    failures: int
    opened_ms: int
    probe_id: str | None
    probe_until_ms: int
    now_ms: int  # the store's time when this was read
    #: this process's clock: monotonic, or the store's injected clock (tests' fake time)
    ticks: Callable[[], float] = attrs.field(default=time.monotonic, eq=False, repr=False)
    seen: float = attrs.field(
        default=attrs.Factory(lambda self: self.ticks(), takes_self=True)
    )  # this process's time then

    def age(self) -> float:
        """Seconds since this was read (on :attr:`ticks`)."""
        return self.ticks() - self.seen

    def now(self) -> float:
        """The store's time now (epoch ms), estimated from when this was read."""
        return self.now_ms + self.age() * 1000


_CLOSED_ROW: Final = {
    "state": "closed",
    "failures": 0,
    "opened_ms": 0,
    "probe_id": None,
    "probe_until_ms": 0,
}


class CircuitRow:
    """The ``circuit_breaker`` row of one provider and application."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        provider: str,
        app: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.app = app
        self._clock = clock
        self._ready = False

    def _where(self) -> sa.ColumnElement[bool]:
        c = t.circuit_breaker.c
        return sa.and_(c.provider == self.provider, c.app == self.app)

    def _view(self, row: Any, now: int) -> CircuitView:
        values: dict[str, Any] = dict(_CLOSED_ROW) if row is None else row._asdict()
        return CircuitView(
            ticks=self._clock or time.monotonic,
            state="open" if values["state"] == "open" else "closed",
            failures=int(values["failures"]),
            opened_ms=int(values["opened_ms"]),
            probe_id=values["probe_id"],
            probe_until_ms=int(values["probe_until_ms"]),
            now_ms=now,
        )

    def read(self) -> CircuitView:
        """The row as stored (a closed circuit when there is no row yet)."""
        with read(self.engine) as conn:
            now = _now_ms(conn, self._clock)
            row = conn.execute(sa.select(t.circuit_breaker).where(self._where())).first()
            return self._view(row, now)

    def change(self, change: Callable[[CircuitView], dict[str, Any] | None]) -> CircuitView:
        """One write transaction: ``change`` gets the locked row and returns the new values
        (None: nothing to write)."""
        table = t.circuit_breaker
        with write(self.engine) as conn:
            now = _now_ms(conn, self._clock)
            if not self._ready:
                conn.execute(
                    dialect_insert(conn, table)
                    .values(provider=self.provider, app=self.app, updated_ms=now, **_CLOSED_ROW)
                    .on_conflict_do_nothing()
                )
            row = conn.execute(sa.select(table).where(self._where()).with_for_update()).first()
            current = self._view(row, now)
            values = change(current)
            if values is None:
                return current
            conn.execute(table.update().where(self._where()).values(updated_ms=now, **values))
            row = conn.execute(sa.select(table).where(self._where())).first()
        self._ready = True
        return self._view(row, now)
