"""A circuit's state in the store, shared by every process: the ``circuit_breaker`` row of
one provider and application (client id).

:class:`calbridge._breaker.CircuitBreaker` decides (closed, open, half-open; when to probe);
this module only reads and changes the shared row, each change one short transaction on
the store's clock (the database's on PostgreSQL). Synchronous: the breaker calls it
through :func:`calbridge.store.offload`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
import sqlalchemy as sa

__all__ = ["CircuitView", "SharedCircuit"]

log = logging.getLogger("calbridge.http")


@attrs.frozen
class CircuitView:
    """A shared circuit's row as read or written, and when (the store's clock)."""

    state: Literal["closed", "open"]
    failures: int
    opened_ms: int
    probe_id: str | None
    probe_until_ms: int
    now_ms: int  # the store's time when this was read
    seen: float = attrs.field(factory=time.monotonic)  # this process's time then

    def now(self) -> float:
        """The store's time now (epoch ms), estimated from when this was read."""
        return self.now_ms + (time.monotonic() - self.seen) * 1000


_CLOSED_ROW: Final = {
    "state": "closed",
    "failures": 0,
    "opened_ms": 0,
    "probe_id": None,
    "probe_until_ms": 0,
}


class SharedCircuit:
    """The ``circuit_breaker`` row of one provider and application on one store.

    Every method is one short transaction (synchronous: call them through
    :func:`calbridge.store.offload` from async code). ``clock`` (epoch seconds) defaults
    to the database's clock on PostgreSQL and the system clock on SQLite.
    """

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
        self.app = app or "-"
        self._clock = clock
        self._ready = False

    def __repr__(self) -> str:
        return f"SharedCircuit({self.provider!r}, app={self.app!r})"

    def _now_ms(self, conn: sa.Connection) -> int:
        from .store import database_now

        return int((self._clock() if self._clock is not None else database_now(conn)) * 1000)

    def _where(self) -> Any:
        from .store import schema

        t = schema.circuit_breaker
        return sa.and_(t.c.provider == self.provider, t.c.app == self.app)

    def _view(self, row: Any, now: int) -> CircuitView:
        values: dict[str, Any] = dict(_CLOSED_ROW) if row is None else row._asdict()
        return CircuitView(
            state="open" if values["state"] == "open" else "closed",
            failures=int(values["failures"]),
            opened_ms=int(values["opened_ms"]),
            probe_id=values["probe_id"],
            probe_until_ms=int(values["probe_until_ms"]),
            now_ms=now,
        )

    def read(self) -> CircuitView:
        """The state as stored (a closed circuit when there is no row yet)."""
        from .store import read, schema

        t = schema.circuit_breaker
        with read(self.engine) as conn:
            now = self._now_ms(conn)
            row = conn.execute(sa.select(t).where(self._where())).first()
            return self._view(row, now)

    def _change(self, change: Callable[[CircuitView], dict[str, Any] | None]) -> CircuitView:
        """One write transaction: ``change`` gets the locked row and returns the new values
        (None: nothing to write)."""
        from .store import dialect_insert, schema, write

        t = schema.circuit_breaker
        with write(self.engine) as conn:
            now = self._now_ms(conn)
            if not self._ready:
                conn.execute(
                    dialect_insert(conn, t)
                    .values(provider=self.provider, app=self.app, updated_ms=now, **_CLOSED_ROW)
                    .on_conflict_do_nothing()
                )
            row = conn.execute(sa.select(t).where(self._where()).with_for_update()).first()
            current = self._view(row, now)
            values = change(current)
            if values is None:
                return current
            conn.execute(t.update().where(self._where()).values(updated_ms=now, **values))
            row = conn.execute(sa.select(t).where(self._where())).first()
        self._ready = True
        return self._view(row, now)

    def fail(self, threshold: int, probe_id: str | None = None) -> CircuitView:
        """A call failed: one more failure in a row; the circuit opens at ``threshold``
        (and opens again when it was open: a failed probe, or a call sent before it opened).
        """

        def change(v: CircuitView) -> dict[str, Any]:
            failures = v.failures + 1
            values: dict[str, Any] = {"failures": failures}
            if v.state == "open" or failures >= threshold:
                if v.state == "closed":
                    log.warning(
                        "%s failed %d calls in a row (all processes): circuit open",
                        self.provider,
                        failures,
                    )
                values.update(state="open", opened_ms=v.now_ms)
            if probe_id is not None and v.probe_id == probe_id:
                values.update(probe_id=None, probe_until_ms=0)
            return values

        return self._change(change)

    def succeed(self, probe_id: str | None = None) -> CircuitView:
        """The provider answered: the circuit closes and the count starts again."""

        def change(v: CircuitView) -> dict[str, Any] | None:
            if v.state == "closed" and not v.failures and v.probe_id is None:
                return None
            if v.state == "open":
                log.info("%s answered again: circuit closed (all processes)", self.provider)
            # a closed circuit has no probe out (a probe ending later finds it not its own)
            return {"state": "closed", "failures": 0, "probe_id": None, "probe_until_ms": 0}

        return self._change(change)

    def claim_probe(self, cooldown: float, lease: float, probe_id: str) -> CircuitView:
        """Claim the half-open probe: granted (the view's ``probe_id`` is ``probe_id``)
        when the circuit is open, its cooldown is over and no other probe is out."""

        def change(v: CircuitView) -> dict[str, Any] | None:
            if v.state != "open" or v.now_ms < v.opened_ms + cooldown * 1000:
                return None
            if v.probe_id is not None and v.probe_until_ms > v.now_ms:
                return None
            return {"probe_id": probe_id, "probe_until_ms": v.now_ms + int(lease * 1000)}

        return self._change(change)

    def release(self, probe_id: str) -> CircuitView:
        """The probe ended saying nothing of the provider's health: another may go."""

        def change(v: CircuitView) -> dict[str, Any] | None:
            if v.probe_id != probe_id:
                return None
            return {"probe_id": None, "probe_until_ms": 0}

        return self._change(change)
