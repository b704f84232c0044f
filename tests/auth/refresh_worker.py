"""A worker process for the cross-process single-flight test.

Usage: ``python refresh_worker.py DB_URL ACCOUNT_ID TOKEN_URL N``; keys come from
``CALBRIDGE_KEYS`` and the client secret from ``LOOPBACK_CLIENT_SECRET``. It prints
``ready`` once set up, waits for a line on stdin (the start signal, sent to every worker
at once), runs N coroutines that each ask for a token, and prints a JSON line
``{"tokens": [...], "calls": n}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

from calbridge.auth import StoreTokenSource
from calbridge.auth.testing import LoopbackOAuthProvider
from calbridge.provider import ProviderSettings
from calbridge.store import Store, Vault, create_engine


async def main(db_url: str, account_id: str, token_url: str, n: int) -> None:
    engine = create_engine(db_url, upgrade=False)
    store = Store(engine, Vault.from_env())
    async with httpx.AsyncClient(timeout=30) as http:
        provider = LoopbackOAuthProvider(
            http=http,
            settings=ProviderSettings(
                client_id="client-1",
                client_secret=os.environ["LOOPBACK_CLIENT_SECRET"],
                base_urls={"token": token_url},
            ),
        )
        # several sources per process: the lock is per (store, account), not per instance
        sources = [
            StoreTokenSource(store, provider, account_id, poll_interval=0.01) for _ in range(4)
        ]
        await asyncio.to_thread(store.get_tokens, account_id)  # warm the pool and the vault
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
    asyncio.run(main(url, account, token, int(count)))
