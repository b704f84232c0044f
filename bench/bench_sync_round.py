"""A full sync round of a large calendar: memory and speed, bounded spool against none.

Each run is a fresh child process: a SQLite store (WAL) in a temporary directory, the
in-memory reference provider's account, and a provider read that yields fresh events page
by page (250 per page, each with a description, three attendees and a 1 KB ``raw``
payload, as a decoded Google or Cronofy page gives them; nothing else keeps them). The
child runs ``SyncEngine.sync(full=True)`` once, as the first sync of a newly connected
calendar does: it reads every page, then commits the events to the cache and enqueues
their delivery batches in one transaction.

Reported per run: events/s of the whole round, and how far the process's peak resident
memory rose above what it was before the round. Runs: the default spool
(``hold=2000``) and an unbounded one (``hold`` larger than the calendar: every change
held until the commit, as rounds were before the spool), each at 10,000 and 50,000
events. Memory is flat when the 50,000-event round's rise is about the 10,000-event
one's.

Usage: ``python bench/bench_sync_round.py [--no-docs]`` (part of ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SIZES = (10_000, 50_000)
HOLDS = (2000, 10**9)
PAGE = 250


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _event(i: int) -> Any:
    import calbridge

    start = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC) + dt.timedelta(minutes=30 * i)
    people = tuple(
        calbridge.Attendee(email=f"person{(i + k) % 40}@example.com", name=f"Person {k}")
        for k in range(3)
    )
    return calbridge.Event(
        id=f"evt_{i:07d}",
        calendar_id="work",
        provider="memory",
        start=calbridge.EventTime.zoned(start, "Europe/London"),
        end=calbridge.EventTime.zoned(start + dt.timedelta(minutes=30), "Europe/London"),
        summary=f"Weekly sync {i}",
        description="Agenda: review the numbers, decide the next steps, assign owners. " * 4,
        location="Room 4.12",
        ical_uid=f"evt_{i:07d}@example.com",
        attendees=people,
        etag=f'"{i}"',
        raw={"id": f"evt_{i:07d}", "summary": f"Weekly sync {i}", "body": "x" * 1000},
    )


def child(total: int, hold: int) -> None:
    """Child process: one full round; prints one JSON line."""
    import calbridge
    from calbridge._config import BridgeConfig
    from calbridge._runtime import Runtime
    from calbridge.store import generate_key
    from calbridge.sync import SyncEngine
    from calbridge.testing import MemoryBackend, MemoryProvider, fresh_plugin_host, memory_plugin

    async def pages(
        self: Any, session: Any, calendar_id: str, cursor: Any, **_: Any
    ) -> AsyncIterator[calbridge.ChangePage]:
        for start in range(0, total, PAGE):
            changes = tuple(
                calbridge.Change(
                    kind=calbridge.ChangeKind.UPSERTED,
                    calendar_id=calendar_id,
                    event_id=f"evt_{i:07d}",
                    event=_event(i),
                )
                for i in range(start, min(total, start + PAGE))
            )
            last = start + PAGE >= total
            yield calbridge.ChangePage(changes=changes, cursor="1" if last else None, full=True)

    MemoryProvider.changes = pages  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        backend = MemoryBackend()
        backend.add_calendar("work", "Work")
        config = BridgeConfig(
            database_url=f"sqlite:///{folder}/bench.db",
            keys=f"k1:{generate_key()}",
            providers={"memory": calbridge.ProviderSettings(options={"backend": backend})},
        )
        runtime = Runtime.open(config, host=fresh_plugin_host(memory_plugin))
        account = runtime.store.accounts.upsert_account(
            app_user_id="bench", provider="memory", provider_account_id="bench"
        )
        account_id = account.id
        assert account_id is not None

        async def main() -> Any:
            provider = runtime.provider("memory")
            grant = await provider.exchange_code(code="user:bench", redirect_uri="memory://cb")
            runtime.store.credentials.save_tokens(account_id, grant.tokens)
            engine = SyncEngine(runtime, hold=hold)
            before = _rss()
            began = time.perf_counter()
            result = await engine.sync(account_id, "work", full=True)
            seconds = time.perf_counter() - began
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return result, seconds, peak - before

        result, seconds, rise = asyncio.run(main())
        assert result.upserted == total, result
        print(json.dumps({"events": total, "hold": hold, "seconds": seconds, "rise": rise}))


def run(total: int, hold: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(total), str(hold)],
        check=True,
        capture_output=True,
        text=True,
    )
    answer: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return answer


def update_doc(section: str) -> None:
    text = DOC.read_text()
    head = "## Sync: a full round"
    if head in text:
        before, rest = text.split(head, 1)
        after = rest.split("\n## ", 1)
        tail = "\n## " + after[1] if len(after) == 2 else ""
        text = before + section.rstrip("\n") + "\n" + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    results = {(total, hold): run(total, hold) for hold in HOLDS for total in SIZES}
    rows = []
    for hold in HOLDS:
        label = f"hold={hold:,}" if hold < 10**9 else "unbounded (every change held)"
        cells = []
        for total in SIZES:
            r = results[(total, hold)]
            cells.append(f"{total / r['seconds']:,.0f} events/s, +{r['rise'] / 1e6:,.0f} MB")
        small, large = (results[(t, hold)]["rise"] for t in SIZES)
        rows.append(f"| {label} | {' | '.join(cells)} | {large / max(small, 1):.1f}x |")
    header = (
        "| spool | "
        + " | ".join(f"{t:,} events: speed, peak memory rise" for t in SIZES)
        + f" | rise {SIZES[1] // 1000}k / {SIZES[0] // 1000}k |\n|---|"
        + "---|" * (len(SIZES) + 1)
    )
    table = header + "\n" + "\n".join(rows)
    bounded_growth, unbounded_growth = (
        results[(SIZES[1], hold)]["rise"] / max(results[(SIZES[0], hold)]["rise"], 1)
        for hold in HOLDS
    )
    print(table)
    if not args.no_docs:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        section = (
            "## Sync: a full round\n\n"
            "`python bench/bench_sync_round.py` (part of `python -m bench`). One full "
            "`SyncEngine.sync` round per fresh child process, SQLite store, fresh events "
            f"({PAGE} per page, each with a description, three attendees and a 1 KB raw "
            "payload); the round reads every page, then commits the cache and the delivery "
            "batches in one transaction. Peak memory rise is the child's peak resident "
            "memory above what it was before the round. The unbounded row holds every "
            "change until the commit, as rounds did before the spool.\n\n"
            f"Last run {stamp}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs:\n\n"
            + table
            + "\n\n"
            + "What the numbers say. With the spool, the round's memory rise barely grows "
            f"with the calendar ({bounded_growth:.1f}x for 5x the events); holding every "
            f"change, it grows with it ({unbounded_growth:.1f}x). The spool costs speed "
            "once a round outgrows `hold`: each change is pickled while the pages are read "
            "and unpickled during the commit. Rounds under `hold` changes (incremental "
            "rounds, and full reads of most calendars) never touch the disk and run at the "
            "unbounded row's speed. For comparison, the engine before the spool (commit "
            "0cc7a92: one insert and two id-map queries per event, the id map not indexed "
            "by event) measured on 2026-12-03, same machine and script: 1,750 / 1,655 "
            "events/s and +34 / +125 MB at 10,000 / 50,000 events.\n"
        )
        update_doc(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
