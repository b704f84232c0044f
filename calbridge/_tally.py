"""What this process counts per provider, added to the counts every process shares.

Counting happens on busy paths (every sync round, every 429), so :meth:`Tally.add` only
adds to a number in memory. A daemon thread, started by the first count, writes what
accumulated every ``interval`` seconds in one short write transaction on this process's
own rows (:class:`calbridge.store.CountRows`: no other process writes them, so nobody
waits), and :meth:`Tally.close` writes the rest. ``GET /metrics`` sums every process's
rows, so one scrape of any process reports the whole deployment, across hosts.

A write that fails (the store locked or down) keeps the counts for the next one: counts
are late then, never lost while the process lives. A process killed outright loses at
most its last ``interval`` of counts.

What is counted (names of :class:`calbridge.store.CountKey`):

* ``sync_rounds``: sync rounds by provider and outcome (``ok``, ``error``,
  ``cursor_expired``);
* ``provider_calls``: attempts sent to providers, by provider and outcome (the status
  class, ``429`` apart, or ``error`` when no answer came), counted by the shared client's
  transport (:func:`calbridge._resilience.count_calls`) for every provider, with a rate
  budget or not.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .store import CountKey, CountRows, Engine

__all__ = ["PROVIDER_CALLS", "SYNC_ROUNDS", "Tally"]

log = logging.getLogger("calbridge.tally")

#: the names counted
SYNC_ROUNDS: Final = "sync_rounds"
PROVIDER_CALLS: Final = "provider_calls"


class Tally:
    """This process's counts, written to the store every ``interval`` seconds.

    Args:
        engine: the store's engine.
        interval: seconds between writes.
        retire_after: a source (process) that wrote nothing for this long is folded into
            the retired counts by whichever process writes next after an hour.
        source: this process's name in the rows (default ``host:pid:start``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 10.0,
        retire_after: float = 86_400.0,
        source: str | None = None,
    ) -> None:
        from .store import CountRows

        self._rows: CountRows = CountRows(engine)
        self.interval = interval
        self.retire_after = retire_after
        self.source = (source or f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}")[:255]
        self._pending: Counter[CountKey] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_retire: float | None = None

    def __repr__(self) -> str:
        return f"Tally(source={self.source!r}, pending={sum(self._pending.values())})"

    def add(self, name: str, provider: str, outcome: str = "", n: int = 1) -> None:
        """Count ``n`` of ``name`` for ``provider`` (and ``outcome``); never blocks on the
        store."""
        from .store import CountKey

        with self._lock:
            self._pending[CountKey(name, provider, outcome)] += n
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="calbridge-tally", daemon=True
                )
                self._thread.start()

    def count_call(self, provider: str, outcome: str) -> None:
        """Count one attempt of a call to ``provider`` that ended in ``outcome`` (a
        :data:`calbridge._resilience.CallCounter`)."""
        self.add(PROVIDER_CALLS, provider, outcome)

    def pending(self) -> dict[CountKey, int]:
        """What has been counted and not written yet."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> bool:
        """Write what accumulated (synchronous: async code offloads it). Returns False,
        keeping the counts for the next write, when the store refused."""
        with self._lock:
            taken, self._pending = self._pending, Counter()
        if not taken:
            return True
        try:
            self._rows.add(self.source, taken)
        except Exception as exc:  # the store locked or down: counted again next time
            log.warning("counts not written yet (%s); kept for the next write", type(exc).__name__)
            with self._lock:
                self._pending.update(taken)
            return False
        now = time.monotonic()
        if self._last_retire is None or now - self._last_retire >= 3600.0:
            self._last_retire = now
            try:
                self._rows.retire(idle_for=self.retire_after)
            except Exception as exc:  # retiring is housekeeping: next hour
                log.info("retiring idle count sources failed (%s)", type(exc).__name__)
        return True

    def close(self) -> None:
        """Stop the writer thread and write what is left (synchronous)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self.interval + 5.0)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
