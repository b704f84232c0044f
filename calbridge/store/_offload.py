"""The one door from async code to the database: :func:`offload`.

Store and queue methods are synchronous (SQLAlchemy Core on a pooled engine) and may wait:
on SQLite for another process's write lock (up to the busy timeout), on PostgreSQL for a
row lock or a pooled connection. Called on the event loop, that wait stalls every
coroutine of the process: webhook acknowledgements, user-facing reads, lease heartbeats.
So async code never calls them directly; it awaits ``offload(store.method, ...)``, which
runs the call on a thread of calbridge's own pool.

Why its own pool rather than ``asyncio.to_thread``: the loop's default executor is shared
with DNS lookups (``getaddrinfo``) and whatever else the application offloads; a burst of
database waits there would delay name resolution for provider calls, and the other way
round. The pool is bounded (``CALBRIDGE_DB_THREADS``, default 16: the PostgreSQL engine's
pool plus its overflow is 10, SQLite waits on its file lock, not a connection), so a
storm of calls queues here instead of opening threads without end.

Context variables (call priority, tracing) travel with the call, as with ``to_thread``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, ParamSpec, TypeVar

__all__ = ["DB_THREADS_ENV", "offload"]

P = ParamSpec("P")
R = TypeVar("R")

#: environment variable: threads of the database pool (default 16)
DB_THREADS_ENV: Final = "CALBRIDGE_DB_THREADS"


class _Pool:
    """The process's database thread pool, made on first use (and anew after a fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def get(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is not None:
            return executor
        with self._lock:
            if self._executor is None:
                size = int(os.environ.get(DB_THREADS_ENV, "") or 16)
                self._executor = ThreadPoolExecutor(
                    max_workers=max(1, size), thread_name_prefix="calbridge-db"
                )
            return self._executor

    def forget(self) -> None:  # a forked child must not use the parent's threads
        self._executor = None
        self._lock = threading.Lock()


_POOL: Final = _Pool()

os.register_at_fork(after_in_child=_POOL.forget)


async def offload(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn(*args, **kwargs)`` (a store or queue call) on the database thread pool and
    await its result; the event loop goes on meanwhile.

    ::

        account = await offload(store.accounts.get_account, account_id)
    """
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await loop.run_in_executor(_POOL.get(), call)
