"""Where a sync round keeps the changes it has read until it commits them.

A round must read every page before it writes anything (one transaction, so a crash
loses nothing and applies nothing twice), and a full read of a large calendar is large:
100,000 events held as :class:`~calbridge.Event` values take hundreds of megabytes. So
a :class:`ChangeSpool` holds at most ``hold`` changes in memory; past that it pickles
them, a batch at a time, into an unlinked temporary file (private to this process: it
has no name, and the operating system frees it when the spool is closed or the process
dies, however it dies). What stays in memory for the whole round is one small entry per
event id, which says where that event's latest change is.

Pickle is safe here: the file is written and read back by this process only. Changes
that cannot be pickled (a provider whose events carry, say, a ``MappingProxyType`` as
``raw``) are not lost: the spool logs a warning and holds the round in memory, as rounds
were held before there was a spool. The provider contract
(:class:`calbridge.testing.ProviderContract`) checks that a provider's changes spill.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO

from ..models import Change

__all__ = ["ChangeSpool"]

log = logging.getLogger("calbridge.sync")

#: changes held in memory before they go to the file
DEFAULT_HOLD = 2000


class ChangeSpool:
    """The changes of one round, in the order they came; the latest per event wins.

    :meth:`latest` yields each event's latest change once, in the order those latest
    changes arrived (what a dict keyed by event id, updated change by change, would
    hold). It can be iterated again (a commit that retries reads it again). Use the
    spool as a context manager, or :meth:`close` it: that frees the file.
    """

    def __init__(self, *, hold: int = DEFAULT_HOLD) -> None:
        if hold < 1:
            raise ValueError("hold must be at least 1")
        self.hold = hold
        self._held: list[Change] = []
        self._file: IO[bytes] | None = None
        self._records = 0  # pickled batches in the file
        self._latest: dict[str, int] = {}  # event id -> sequence number of its latest change
        self._count = 0  # changes added
        self._closed = False
        self._in_memory = False  # set when changes could not be pickled

    def __enter__(self) -> ChangeSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ChangeSpool(changes={self._count}, events={len(self._latest)}, "
            f"held={len(self._held)}, spilled={self.spilled})"
        )

    @property
    def spilled(self) -> int:
        """How many batches of changes went to the file (0: all in memory)."""
        return self._records

    @property
    def held(self) -> int:
        """Changes held in memory right now."""
        return len(self._held)

    def __len__(self) -> int:
        """Distinct events the round saw."""
        return len(self._latest)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._latest

    def add(self, changes: Iterable[Change]) -> None:
        """Append changes (a page) in the order they came."""
        if self._closed:
            raise RuntimeError("the spool is closed")
        latest = self._latest
        held = self._held
        seq = self._count
        for change in changes:
            latest[change.event_id] = seq
            held.append(change)
            seq += 1
        self._count = seq
        if len(held) >= self.hold and not self._in_memory:
            self._spill()

    def _spill(self) -> None:
        try:
            data = pickle.dumps(self._held, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            provider = next((c.event.provider for c in self._held if c.event), "?")
            log.warning(
                "sync round of %s: changes cannot be pickled (%s); holding the round in "
                "memory instead of spilling it to disk",
                provider,
                type(exc).__name__,
            )
            self._in_memory = True
            return
        if self._file is None:
            # open for the spool's life; close() frees it
            self._file = tempfile.TemporaryFile(prefix="calbridge-sync-")  # noqa: SIM115
        self._file.seek(0, 2)
        self._file.write(data)
        self._records += 1
        self._held = []

    def _batches(self) -> Iterator[list[Change]]:
        if self._file is not None and self._records:
            self._file.flush()
            self._file.seek(0)
            for _ in range(self._records):
                batch: list[Change] = pickle.load(self._file)  # noqa: S301 - our own file
                yield batch
        if self._held:
            yield self._held

    def latest(self) -> Iterator[Change]:
        """Each event's latest change, once, in the order the latest changes came."""
        if self._closed:
            raise RuntimeError("the spool is closed")
        latest = self._latest
        seq = 0
        for batch in self._batches():
            for change in batch:
                if latest[change.event_id] == seq:
                    yield change
                seq += 1

    def close(self) -> None:
        """Free the file and what is held (the spool cannot be read after)."""
        self._closed = True
        self._held = []
        self._latest = {}
        if self._file is not None:
            self._file.close()
            self._file = None
