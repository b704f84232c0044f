"""Which read-path optimisations still win under realistic conditions (HTTPS, 20 ms/request).

Issue #20 asks to keep only measured wins. The Cronofy sandbox serves HTTPS with a private
CA (as the real Cronofy serves only HTTPS) and answers every request after 20 ms (its
latency fault); calbridge reads one calendar of 10,000 events (100 pages) through
``CronofyProvider.list_events`` with its optimisations switched off in turn, interleaved
with pycronofy against the same sandbox:

* ``default``: pooled connections (httpx's transport), the next page requested while the
  current one is converted (prefetch), reads of at least four pages split into four
  concurrent sub-window chains;
* ``no prefetch``: one page at a time; ``no sub-windows``: one chain
  (``read_concurrency=1``); and both;
* ``no pooling``: a new (TLS) connection per request, as pycronofy does.

Rows give events/s (median of rounds) and the ratio to ``default`` and to pycronofy.
``python bench/bench_realistic.py [--rounds N] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_cronofy_read as cr  # the sibling benchmark's sandbox and clients

import calbridge

START, END = "<!-- realistic-bench:start -->", "<!-- realistic-bench:end -->"
DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


#: (name, transport factory or None for the default, provider options)
def _unpooled() -> httpx.AsyncBaseTransport:
    """httpx's transport keeping no idle connection: a new TLS connection per request."""
    return httpx.AsyncHTTPTransport(
        verify=cr.verify(), limits=httpx.Limits(max_keepalive_connections=0)
    )


ONE_CHAIN: dict[str, Any] = {"read_concurrency": 1}

#: (name, transport factory or None for the default, provider options)
VARIANTS: list[tuple[str, Callable[[], httpx.AsyncBaseTransport] | None, dict[str, Any]]] = [
    ("default (pooled, prefetch, sub-windows)", None, {}),
    ("no prefetch", None, {"prefetch": False}),
    ("no sub-windows (one chain)", None, ONE_CHAIN),
    ("one chain, no prefetch", None, {**ONE_CHAIN, "prefetch": False}),
    ("one chain, no prefetch, no pooling", _unpooled, {**ONE_CHAIN, "prefetch": False}),
]


async def read_once(
    base: str,
    session: calbridge.Session,
    cal: str,
    *,
    transport: Callable[[], httpx.AsyncBaseTransport] | None,
    options: dict[str, Any],
    rounds: int,
) -> list[float]:
    """events/s of ``rounds`` reads with one pooled client (after one warm-up read)."""
    from calbridge_cronofy import CronofyProvider

    chosen = transport() if transport is not None else None
    out: list[float] = []
    async with calbridge.make_http_client(transport=chosen, verify=cr.verify()) as http:
        provider = CronofyProvider(
            http=http,
            settings=calbridge.ProviderSettings(
                client_id=cr.CLIENT_ID,
                client_secret=cr.CLIENT_SECRET,
                base_urls={"api": f"{base}/cronofy", "app": f"{base}/cronofy"},
                options={
                    "rate_limit_per_second": 0,
                    "rate_limit_per_minute": 0,
                    "google_event_ids": False,
                    **options,
                },
            ),
        )
        for i in range(rounds + 1):
            t = time.perf_counter()
            n = 0
            async for page in provider.list_events(session, cal, cr.window()):
                n += len(page)
            assert n == cr.USERS["bench10k@example.com"], n
            if i:  # the first read warms the pool
                out.append(n / (time.perf_counter() - t))
    return out


def measure(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tls_dir:
        child, base = cr.start("--serve", "--tls", tls_dir)
        os.environ["REQUESTS_CA_BUNDLE"] = str(pathlib.Path(tls_dir) / "ca.pem")
        try:
            session, cal, token = asyncio.run(cr.connect(base, "bench10k@example.com"))
            httpx.post(
                f"{base}/_sandbox/faults/cronofy", json={"latency": cr.LATENCY}, verify=cr.verify()
            ).raise_for_status()
            results: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
            theirs: list[float] = []
            load = os.getloadavg()[0]
            for _ in range(rounds):  # variants interleaved, so host noise spreads evenly
                for name, transport, options in VARIANTS:
                    results[name] += asyncio.run(
                        read_once(
                            base, session, cal, transport=transport, options=options, rounds=1
                        )
                    )
                t = time.perf_counter()
                n = cr.read_pycronofy(base, token, cal)
                theirs.append(n / (time.perf_counter() - t))
        finally:
            del os.environ["REQUESTS_CA_BUNDLE"]
            child.terminate()
            child.wait(timeout=10)
    return {
        "rounds": rounds,
        "variants": {k: statistics.median(v) for k, v in results.items()},
        "pycronofy": statistics.median(theirs),
        "load": (load, os.getloadavg()[0]),
    }


def report(r: dict[str, Any]) -> str:
    default = r["variants"][VARIANTS[0][0]]
    rows = [
        f"| {name} | {eps:,.0f} | {eps / default:.2f} | {eps / r['pycronofy']:.2f}x |"
        for name, eps in r["variants"].items()
    ]
    rows.append(
        f"| pycronofy 2.x (a new connection per page) | {r['pycronofy']:,.0f} | "
        f"{r['pycronofy'] / default:.2f} | 1.00x |"
    )
    return "\n".join(
        [
            "| calbridge read path | events/s (median) | vs default | vs pycronofy |",
            "|---|---|---|---|",
            *rows,
            "| load average (1 min) before / after | "
            f"{r['load'][0]:.1f} / {r['load'][1]:.1f} | | |",
        ]
    )


def write_docs(r: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    body = (
        f"{START}\n## Read path under realistic conditions: HTTPS, 20 ms per request\n\n"
        "`python bench/bench_realistic.py --write-docs` (part of `python -m bench`). The "
        "Cronofy sandbox over HTTPS (private CA) with its latency fault at 20 ms per request; "
        "one calendar of 10,000 events, 100 pages; each optimisation switched off in turn, "
        f"all variants and pycronofy interleaved, {r['rounds']} rounds, medians.\n\n"
        f"Last run {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs:\n\n{report(r)}\n{END}"
    )
    if START in text:
        head, rest = text.split(START, 1)
        text = head + body + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    DOCS.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    r = measure(args.rounds)
    print(report(r))
    if args.write_docs:
        write_docs(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
