"""A circuit's state in the store, shared by every process: the ``circuit_breaker`` row of
one provider and application (client id).

:class:`calbridge._breaker.CircuitBreaker` decides (closed, open, half-open; when to probe);
this module decides how the shared row changes on a failure, a success or a probe, and
changes it through the store (:class:`calbridge.store.CircuitRow`: each change one
short transaction on the store's clock, the database's on PostgreSQL). Synchronous: the
breaker calls it through :func:`calbridge.store.offload`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .store import CircuitRow, CircuitView

if TYPE_CHECKING:
    from .store import Engine

__all__ = ["CircuitView", "SharedCircuit"]

log = logging.getLogger("calbridge.http")


class SharedCircuit:
    """The ``circuit_breaker`` row of one provider and application on one store.

    Every method is one short transaction (synchronous: call them through
    :func:`calbridge.store.offload` from async code). ``clock`` (epoch seconds) defaults
    to the database's clock on PostgreSQL and the system clock on SQLite.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        provider: str,
        app: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.app = app or "-"
        self._row = CircuitRow(engine, provider=provider, app=self.app, clock=clock)

    def __repr__(self) -> str:
        return f"SharedCircuit({self.provider!r}, app={self.app!r})"

    def read(self) -> CircuitView:
        """The state as stored (a closed circuit when there is no row yet)."""
        return self._row.read()

    def _change(self, change: Callable[[CircuitView], dict[str, Any] | None]) -> CircuitView:
        """One write transaction: ``change`` gets the locked row and returns the new values
        (None: nothing to write)."""
        return self._row.change(change)

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
