"""Router cost: cached decisions (target <= 5 us) and store reads per uncached decision.

Runs the router over a real SQLite store with 1,000 users (each holding a Google and a
Cronofy account, a third of them mid-migration), then measures:

* the cost of a cached decision (``Router.route`` on a warm cache);
* the cost of an uncached decision and how many SQL statements it issues.

Usage: ``python bench/bench_router.py [--users N] [--rounds N] [--write-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from calbridge import AccountStatus, TokenSet
from calbridge._config import BridgeConfig
from calbridge._runtime import Runtime
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def populate(rt: Runtime, users: int) -> list[str]:
    """Create users with a google and a cronofy account; a third in cutover."""
    ids = []
    for i in range(users):
        user = f"user-{i:05d}"
        for provider in ("google", "cronofy"):
            acct = rt.store.accounts.upsert_account(
                app_user_id=user,
                provider=provider,
                provider_account_id=f"{provider}-{i}",
                email=f"{user}@example.com",
            )
            assert acct.id is not None
            rt.store.credentials.save_tokens(acct.id, TokenSet(access_token="t", expires_at=0))
            if provider == "cronofy" and i % 7 == 0:
                rt.store.accounts.set_account_status(acct.id, AccountStatus.NEEDS_REAUTH)
        if i % 3 == 0:
            rt.update_routing(user, phase="cutover", data={"legacy_provider": "google"})
        ids.append(user)
    return ids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = BridgeConfig(database_url=f"sqlite:///{tmp}/bench.db", keys=f"k1:{generate_key()}")
        rt = Runtime.open(config, host=fresh_plugin_host())
        users = populate(rt, args.users)
        statements = 0

        def count(*_a: object) -> None:
            nonlocal statements
            statements += 1

        for u in users:  # first decisions establish (and audit) each user's provider
            rt.router.route(u)
        sa.event.listen(rt.engine, "before_cursor_execute", count)
        # cold: one decision per user, counting SQL statements
        rt.router.invalidate()
        loads_before = rt.router.loads
        t0 = time.perf_counter()
        for u in users:
            rt.router.route(u)
        cold = (time.perf_counter() - t0) / len(users)
        cold_stmts = statements / len(users)
        loads = rt.router.loads - loads_before
        # warm: every user's decision is cached (TTL far longer than the measurement)
        rt.router.ttl = 3600.0
        for u in users:
            rt.router.explain(u)
        statements = 0
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            for u in users:
                rt.router.route(u)
        warm = (time.perf_counter() - t0) / (args.rounds * len(users))
        warm_stmts = statements
        await rt.aclose()
    rows = [
        (
            "cached decision",
            f"{warm * 1e6:.2f} us",
            f"{warm_stmts} SQL statements in total",
            "<= 5 us",
        ),
        (
            "uncached decision",
            f"{cold * 1e6:.0f} us",
            f"{cold_stmts:.1f} SQL statements per decision, BEGIN included ({loads} store loads)",
            "1 store read (facts + routing row)",
        ),
    ]
    print(f"{'measure':20} {'value':>12}  detail")
    for name, value, detail, _ in rows:
        print(f"{name:20} {value:>12}  {detail}")
    if not args.no_docs:
        body = [
            "## Router: routing decisions",
            "",
            "| measure | value | detail | target |",
            "|---|---|---|---|",
        ]
        body += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        body += [
            "",
            f"{args.users} users, {args.rounds} warm rounds, SQLite store; "
            "`python bench/bench_router.py`.",
        ]
        update_doc("\n".join(body))


START, END = "<!-- router-bench:start -->", "<!-- router-bench:end -->"


def update_doc(section: str) -> None:
    """Replace this benchmark's section of docs/benchmarks.md (other sections stay)."""
    text = (
        DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\nRun them all with `make bench`.\n"
    )
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
