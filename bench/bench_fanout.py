"""Fan-out at the provider's rate limit: many accounts, several worker processes, one budget.

What runs (real processes on loopback, PostgreSQL as the shared store; see ``_cluster``):

* the sandbox with Cronofy's rate limits ON (50 requests/s and 500 requests/min per
  application) and ``--accounts`` users, each with a primary calendar of ``--events``
  events;
* the webhook receiver (``calbridge serve --workers 0``): Cronofy channels point at it;
* ``--workers`` job workers (``calbridge worker --handlers calbridge.bridge:worker_handlers``);
* this process, as the application's OAuth callback: it connects every user through the
  real redirect flow (consent, code, token exchange; ``--connect-concurrency`` at once),
  which lists the calendars, opens a push channel and queues the first sync.

Measured: connects per minute (onboarding, while the workers run the first syncs), the
time until every account's calendar is synced, what the sandbox answered and counted
against the limit (its own figures, ``GET /_sandbox/requests``), achieved requests/s
against the cap, and 429s (goal 0).

Usage: ``python bench/bench_fanout.py [--accounts 1000] [--workers 3] [--write-docs]``.
Without ``--postgres-url`` or ``$CALBRIDGE_TEST_POSTGRES_URL`` it runs itself again under
``scripts/with-postgres.sh`` (a throwaway server).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

from _cluster import Cluster, bench_main, table

START, END = "<!-- fanout-bench:start -->", "<!-- fanout-bench:end -->"
#: Cronofy's per-application limits, as the sandbox enforces them
CAP_PER_MIN, CAP_PER_S = 500, 50


def most_allowed(seconds: float) -> int:
    """The most calls both sliding windows allow in ``seconds`` from a quiet start."""
    return min(CAP_PER_MIN * math.ceil(seconds / 60), CAP_PER_S * math.ceil(seconds))


def run(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    cluster = Cluster(url, workdir)
    try:
        cluster.start()
        cluster.serve("--workers", "0")
        t0 = time.perf_counter()
        emails = asyncio.run(cluster.seed(args.accounts, args.events))
        seeded = time.perf_counter() - t0
        cluster.counts(reset=True)
        cluster.workers(args.workers, args.concurrency)
        started = time.perf_counter()
        onboard_s, latencies = asyncio.run(cluster.onboard(emails, args.connect_concurrency))
        cluster.wait_synced(len(emails), args.timeout)
        total = time.perf_counter() - started
        counts = cluster.counts()
    finally:
        cluster.stop()
    limited = int(counts["limited"])
    # the first minute may burst to 500 calls; afterwards the cap is 500/min
    steady = max(total - 60.0, 1e-9)
    return {
        "accounts": len(emails),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "events": args.events,
        "seed_s": round(seeded, 1),
        "onboard_s": round(onboard_s, 1),
        "connects_per_min": round(len(emails) / onboard_s * 60, 1),
        "connect_p50_s": round(latencies[len(latencies) // 2], 2),
        "connect_p99_s": round(latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)], 2),
        "total_s": round(total, 1),
        "requests": int(counts["requests"]),
        "limited": limited,
        "throttled": int(counts["throttled"]),
        "statuses": counts["statuses"],
        "per_account": round(limited / len(emails), 2),
        "achieved_per_s": round(limited / total, 2),
        "steady_per_s": round((limited - CAP_PER_MIN) / steady, 2) if total > 90 else None,
        "most_allowed": most_allowed(total),
        "share_of_allowed": round(limited / most_allowed(total), 3),
    }


def report(r: dict[str, Any]) -> str:
    steady = (
        f"{r['steady_per_s']} of 8.33/s = {r['steady_per_s'] / (CAP_PER_MIN / 60):.1%}"
        if r["steady_per_s"] is not None
        else "run too short (< 90 s)"
    )
    return table(
        [
            (
                "accounts / worker processes x jobs each",
                f"{r['accounts']:,} / {r['workers']} x {r['concurrency']}",
            ),
            ("events per account", r["events"]),
            ("onboarding: connects/min, while the workers sync", f"{r['connects_per_min']:,}"),
            ("connect latency p50 / p99 (s)", f"{r['connect_p50_s']} / {r['connect_p99_s']}"),
            ("time until every account is synced (s)", r["total_s"]),
            (
                "requests answered / counted against the limit (sandbox's figures)",
                f"{r['requests']:,} / {r['limited']:,}",
            ),
            ("counted requests per account", r["per_account"]),
            (
                "counted requests vs the most the limits allow in that time",
                f"{r['limited']:,} / {r['most_allowed']:,} = {r['share_of_allowed']:.1%} "
                "(goal >= 90%)",
            ),
            ("after the first minute: requests/s vs the cap (500/min)", steady),
            ("429s answered", f"{r['throttled']} (goal 0)"),
        ]
    )


def describe(r: dict[str, Any]) -> str:
    return (
        f"## Fan-out at the rate limit: {r['accounts']:,} accounts, {r['workers']} worker "
        "processes, PostgreSQL\n\n"
        "`python bench/bench_fanout.py --write-docs` (part of `python -m bench`). The "
        "Cronofy sandbox enforces Cronofy's limits (50 requests/s and 500 requests/min "
        "per application, sliding) and counts what it answered; the workers and the "
        "connecting process share one rate budget through the PostgreSQL store. Each "
        "connect runs the real OAuth redirect flow, lists the calendars and opens a push "
        "channel (user-facing calls); each first sync runs on a worker (background calls)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="jobs per worker")
    parser.add_argument("--connect-concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=3600.0)
    return bench_main(parser, run, report, section=(START, END), describe=describe)


if __name__ == "__main__":
    sys.exit(main())
