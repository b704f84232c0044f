"""The rows behind the counters every process adds to (``metric_counts``).

A process never shares a row with another: it adds to the rows of its own ``source``, so
counting costs no lock any other process waits for, on SQLite or PostgreSQL. A scrape
sums the rows of every source (:meth:`CountRows.totals`). A source that has added nothing
for a while (its process is gone) is folded into the source :data:`RETIRED` and deleted
(:meth:`CountRows.retire`), so the table stays small and the sums never go down, which
is what a Prometheus counter must do. The process-side accumulation (what is counted,
how often it is written) is :mod:`calbridge._tally`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs
import sqlalchemy as sa

from . import schema as t
from ._tx import database_now, dialect_insert, read, write

__all__ = ["RETIRED", "CountKey", "CountRows", "CountTotal"]

#: the source that holds the counts of processes gone
RETIRED: Final = "retired"


@attrs.frozen
class CountKey:
    """What one count is of: ``name`` (``sync_rounds``, ``throttled``), the provider and
    the outcome (``""`` when the count has none)."""

    name: str
    provider: str
    outcome: str = ""


@attrs.frozen
class CountTotal:
    """A count summed over every process that ever added to it."""

    key: CountKey
    value: int


class CountRows:
    """The ``metric_counts`` rows. Synchronous (async code offloads it)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add(self, source: str, counts: Mapping[CountKey, int]) -> None:
        """Add ``counts`` to ``source``'s rows, in one short write transaction."""
        if not counts:
            return
        with write(self.engine) as conn:
            now_ms = int(database_now(conn) * 1000)
            _add(conn, source, counts, now_ms)

    def totals(self, conn: sa.Connection | None = None) -> list[CountTotal]:
        """Every count summed over its sources (in ``conn``'s transaction when given)."""
        c = t.metric_counts.c
        query = (
            sa.select(c.name, c.provider, c.outcome, sa.func.sum(c.value))
            .group_by(c.name, c.provider, c.outcome)
            .order_by(c.name, c.provider, c.outcome)
        )
        if conn is None:
            with read(self.engine) as own:
                rows = own.execute(query).all()
        else:
            rows = conn.execute(query).all()
        return [
            CountTotal(CountKey(name, provider, outcome), int(value))
            for name, provider, outcome, value in rows
        ]

    def retire(self, *, idle_for: float) -> int:
        """Fold the rows of sources that added nothing for ``idle_for`` seconds into
        :data:`RETIRED`, in one write transaction; returns how many sources went."""
        c = t.metric_counts.c
        with write(self.engine) as conn:
            now_ms = int(database_now(conn) * 1000)
            last = sa.func.max(c.updated_ms)
            idle = (
                conn.execute(
                    sa.select(c.source)
                    .where(c.source != RETIRED)
                    .group_by(c.source)
                    .having(last < now_ms - int(idle_for * 1000))
                )
                .scalars()
                .all()
            )
            if not idle:
                return 0
            rows = conn.execute(
                sa.select(c.name, c.provider, c.outcome, sa.func.sum(c.value))
                .where(c.source.in_(idle))
                .group_by(c.name, c.provider, c.outcome)
            ).all()
            folded = {CountKey(n, p, o): int(v) for n, p, o, v in rows}
            _add(conn, RETIRED, folded, now_ms)
            conn.execute(t.metric_counts.delete().where(c.source.in_(idle)))
            return len(idle)


def _add(conn: sa.Connection, source: str, counts: Mapping[CountKey, int], now_ms: int) -> None:
    table = t.metric_counts
    for key, value in sorted(counts.items(), key=lambda kv: attrs.astuple(kv[0])):
        insert = dialect_insert(conn, table).values(
            source=source,
            name=key.name,
            provider=key.provider,
            outcome=key.outcome,
            value=value,
            updated_ms=now_ms,
        )
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[table.c.source, table.c.name, table.c.provider, table.c.outcome],
                set_={"value": table.c.value + insert.excluded.value, "updated_ms": now_ms},
            )
        )
