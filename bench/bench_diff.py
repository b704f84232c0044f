"""``calbridge migrate diff`` over many users: users compared per minute at the rate limit.

A deployment on loopback (``_cluster``): PostgreSQL, the provider sandbox with Cronofy's
rate limits on, ``--users`` users whose Google calendar (the legacy side) Cronofy also
sees, each connected to Google and to Cronofy through the real OAuth flows and synced by
worker processes. Then the real command ``calbridge migrate diff --users-file ...
--jsonl`` compares every user's legacy and Cronofy views field by field (one read of
each side per user; Cronofy's reads come from the shared, rate-limited budget as
background calls); the time to the last user's line gives users per minute.

Usage: ``python bench/bench_diff.py [--users 300] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _cluster import CALBRIDGE, Cluster, bench_main, table

START, END = "<!-- diff-bench:start -->", "<!-- diff-bench:end -->"


def run(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    cluster = Cluster(url, workdir)
    try:
        cluster.start()
        cluster.serve("--workers", "0")
        emails = asyncio.run(cluster.seed(args.users, args.events))
        cluster.workers(3, 8)
        asyncio.run(cluster.onboard(emails, 16, provider="google"))
        asyncio.run(cluster.onboard(emails, 16, provider="cronofy"))
        cluster.wait_synced(2 * len(emails), 3600)
        users_file = workdir / "users.txt"
        users_file.write_text("\n".join(emails) + "\n", encoding="utf-8")
        before = cluster.counts()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [CALBRIDGE, "migrate", "diff", "--users-file", str(users_file), "--jsonl"],
            env=dict(cluster.env, CALBRIDGE_CONFIG=str(cluster.config)),
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        statuses: collections.Counter[str] = collections.Counter()
        first = 0.0
        for line in proc.stdout:
            statuses[json.loads(line)["status"]] += 1
            first = first or time.perf_counter() - t0
        proc.wait()
        elapsed = time.perf_counter() - t0
        after = cluster.counts()
    finally:
        cluster.stop()
    return {
        "users": len(emails),
        "events": args.events,
        "exit": proc.returncode,
        "statuses": dict(statuses),
        "seconds": round(elapsed, 1),
        "first_line_s": round(first, 2),
        "users_per_min": round(sum(statuses.values()) / elapsed * 60, 1),
        "cronofy_calls": int(after["limited"]) - int(before["limited"]),
        "throttled": int(after["throttled"]) - int(before["throttled"]),
    }


def report(r: dict[str, Any]) -> str:
    return table(
        [
            ("users (Google legacy + Cronofy, events each)", f"{r['users']:,} ({r['events']})"),
            ("results by status", ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))),
            ("first user's line after (s)", r["first_line_s"]),
            ("whole run (s), exit status", f"{r['seconds']} (exit {r['exit']})"),
            ("users compared per minute", f"{r['users_per_min']:,}"),
            (
                "Cronofy calls counted during the run / 429s",
                f"{r['cronofy_calls']:,} / {r['throttled']}",
            ),
        ]
    )


def describe(r: dict[str, Any]) -> str:
    return (
        "## `calbridge migrate diff`: users compared per minute\n\n"
        "`python bench/bench_diff.py --write-docs` (part of `python -m bench`). Users "
        "whose Google calendar Cronofy also sees, connected to both through the OAuth "
        "flows and synced; then the real `calbridge migrate diff --users-file ... "
        "--jsonl` on a PostgreSQL store, against the sandbox with Cronofy's rate limits "
        "on (500 requests/min per application, shared with everything else the "
        f"application does). {r['users']:,} users."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--events", type=int, default=5)
    return bench_main(parser, run, report, section=(START, END), describe=describe)


if __name__ == "__main__":
    sys.exit(main())
