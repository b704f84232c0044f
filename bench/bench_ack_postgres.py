"""Webhook acknowledgement on PostgreSQL while workers sync: p50/p99 at 200 notifications/s.

A deployment on loopback (``_cluster``): PostgreSQL, the Cronofy sandbox with its rate
limits on, ``--accounts`` users connected through the real OAuth flow (one push channel
each, pointing at ``calbridge serve``). Then this process sends Cronofy-signed change
notifications for those channels at ``--rate`` per second for ``--seconds`` over
keep-alive connections (the load generator of ``bench_webhooks``) and times every
acknowledgement. Each notification queues (or coalesces into) a sync job of its
calendar, so the workers read from the sandbox all along, as fast as the shared rate
budget lets them.

Two layouts of the same deployment, one after the other, each with ``--workers`` workers
of ``--concurrency`` jobs:

* ``calbridge serve --workers N`` as shipped (the receiver and the workers it runs);
* ``calbridge serve --workers 0`` plus N ``calbridge worker`` processes.

Goal: p99 <= 50 ms with the workers running. Usage: ``python bench/bench_ack_postgres.py
[--accounts 200] [--rate 200] [--seconds 20] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _cluster import Cluster, bench_main, table
from bench_webhooks import steady

START, END = "<!-- ack-postgres-bench:start -->", "<!-- ack-postgres-bench:end -->"


def jobs_done(cluster: Cluster) -> int:
    import sqlalchemy as sa

    from calbridge.jobs._schema import jobs

    with cluster.engine.connect() as conn:
        found = conn.execute(
            sa.select(sa.func.count()).where(jobs.c.kind == "sync", jobs.c.state == "done")
        ).scalar_one()
    return int(found)


def measure(
    cluster: Cluster, args: argparse.Namespace, layout: str, serve_args: list[str], offset: int
) -> dict[str, Any]:
    procs_before = len(cluster.procs)
    serve = cluster.serve(*serve_args)
    if layout == "separate":
        cluster.workers(args.workers, args.concurrency)
    time.sleep(2.0)  # workers up and claiming
    spec = {"cronofy": cluster.channels()}
    done0, counted0 = jobs_done(cluster), int(cluster.counts()["limited"])
    result = asyncio.run(steady(cluster.port, spec, args.rate, args.seconds, offset=offset))
    done1, counted1 = jobs_done(cluster), int(cluster.counts()["limited"])
    for proc in cluster.procs[procs_before:]:
        proc.terminate()
    for proc in cluster.procs[procs_before:]:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert serve.returncode is not None
    return {
        **result,
        "layout": layout,
        "sync_jobs_done": done1 - done0,
        "provider_calls": counted1 - counted0,
    }


def run(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    cluster = Cluster(url, workdir)
    try:
        cluster.start()
        setup = cluster.serve("--workers", "0")
        emails = asyncio.run(cluster.seed(args.accounts, args.events))
        cluster.workers(1, 8)
        asyncio.run(cluster.onboard(emails, 16))
        cluster.wait_synced(len(emails), 1800)
        for proc in cluster.procs[1:]:
            proc.terminate()
        for proc in cluster.procs[1:]:
            proc.wait(timeout=60)
        del cluster.procs[1:]
        assert setup.poll() is not None
        load0 = os.getloadavg()[0]
        shipped = measure(
            cluster,
            args,
            "shipped",
            ["--workers", str(args.workers), "--concurrency", str(args.concurrency)],
            offset=1,
        )
        separate = measure(cluster, args, "separate", ["--workers", "0"], offset=2)
        load1 = os.getloadavg()[0]
    finally:
        cluster.stop()
    return {
        "accounts": len(emails),
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "shipped": shipped,
        "separate": separate,
        "load": [round(load0, 1), round(load1, 1)],
    }


def _row(r: dict[str, Any]) -> str:
    return (
        f"{r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} ms "
        f"({r['ok']:,}/{r['count']:,} 2xx; meanwhile {r['sync_jobs_done']:,} sync jobs done, "
        f"{r['provider_calls']:,} provider calls)"
    )


def report(r: dict[str, Any]) -> str:
    return table(
        [
            ("channels (accounts connected through OAuth)", f"{r['accounts']:,}"),
            (
                f"`calbridge serve --workers {r['workers']}`: p50 / p99 / max",
                _row(r["shipped"]),
            ),
            (
                f"`serve --workers 0` + {r['workers']} `calbridge worker`: p50 / p99 / max",
                _row(r["separate"]),
            ),
            ("goal", "p99 <= 50 ms"),
            ("load average (1 min) before / after", f"{r['load'][0]} / {r['load'][1]}"),
        ]
    )


def describe(r: dict[str, Any]) -> str:
    return (
        "## Webhook acknowledgement on PostgreSQL with workers running\n\n"
        "`python bench/bench_ack_postgres.py --write-docs` (part of `python -m bench`). "
        + r_intro(r)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--events", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker")
    return bench_main(parser, run, report, section=(START, END), describe=describe)


def r_intro(r: dict[str, Any]) -> str:
    return (
        f"{r['accounts']} Cronofy accounts connected through the OAuth flow (one push channel "
        f"each) on a PostgreSQL store; Cronofy-signed change notifications at "
        f"{r['rate']:.0f}/s for {r['seconds']:.0f} s over keep-alive connections, every "
        "acknowledgement timed by the sender. Each notification queues or coalesces a "
        "sync job, so the workers read from the rate-limited sandbox throughout."
    )


if __name__ == "__main__":
    sys.exit(main())
