"""A worker process for the cross-process single-flight test.

Usage: ``python refresh_worker.py DB_URL ACCOUNT_ID TOKEN_URL N``; keys come from
``CALBRIDGE_KEYS`` and the client secret from ``LOOPBACK_CLIENT_SECRET``. It prints
``ready`` once set up, waits for a line on stdin (the start signal, sent to every worker
at once), runs N coroutines that each ask for a token, and prints a JSON line
``{"tokens": [...], "calls": n}``. With a fifth argument ``crash`` it dies
(``os._exit(137)``) right after the token endpoint answered, before anything is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

from calbridge.auth import StoreTokenSource
from calbridge.auth.testing import LoopbackOAuthProvider
from calbridge.models import TokenSet
from calbridge.provider import ProviderSettings
from calbridge.store import Store, Vault, create_engine

#: the crash test's lease is short, so the survivor need not wait long for the dead one's
CRASH_LEASE_MS = 1_000


class CrashingProvider(LoopbackOAuthProvider):
    """Dies between the token response and the commit (reliability.md O7)."""

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        await super().refresh_tokens(tokens)
        os._exit(137)


async def main(db_url: str, account_id: str, token_url: str, n: int, crash: bool) -> None:
    engine = create_engine(db_url, upgrade=False)
    store = Store(engine, Vault.from_env())
    cls = CrashingProvider if crash else LoopbackOAuthProvider
    lease_ms = CRASH_LEASE_MS if crash else 30_000
    async with httpx.AsyncClient(timeout=30) as http:
        provider = cls(
            http=http,
            settings=ProviderSettings(
                client_id="client-1",
                client_secret=os.environ["LOOPBACK_CLIENT_SECRET"],
                base_urls={"token": token_url},
            ),
        )
        # several sources per process: the lock is per (store, account), not per instance
        sources = [
            StoreTokenSource(store, provider, account_id, poll_interval=0.01, lease_ms=lease_ms)
            for _ in range(4)
        ]
        # warm the pool and the vault
        await asyncio.to_thread(store.credentials.get_tokens, account_id)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        results = await asyncio.gather(*(sources[i % 4].get() for i in range(n)))
    engine.dispose()
    print(
        json.dumps(
            {
                "tokens": [t.access_token.reveal() for t in results],
                "calls": sum(s.refresh_calls for s in sources),
            }
        )
    )


if __name__ == "__main__":
    url, account, token, count = sys.argv[1:5]
    asyncio.run(main(url, account, token, int(count), sys.argv[5:6] == ["crash"]))
