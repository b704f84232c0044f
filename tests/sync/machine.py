"""The shared skeleton of the per-sandbox Hypothesis state machines.

Each machine connects one account on a provider sandbox, runs calbridge's change pipeline
against it, and changes the native calendar behind the app's back. Subclasses say how to
build their environment and add the provider-specific rules (expiry, cursor invalidation,
crashes) and the convergence check.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from tests.sync.support import fresh_sqlite_url

__all__ = ["CRASH_LEASE", "SandboxSyncMachine"]

#: the lease a crashed worker held its job with
CRASH_LEASE = 60.0


class SandboxSyncMachine(RuleBasedStateMachine):
    """Setup, teardown, and the native-change, worker and notification-fault rules."""

    #: the sandbox's name in ``world.faults`` (``"cronofy"``, ``"google"``, ``"graph"``)
    fault_provider: ClassVar[str]
    env: Any

    def make_env(self, url: str) -> AbstractAsyncContextManager[Any]:
        """The environment's async context manager on the store at ``url``."""
        raise NotImplementedError

    @property
    def native_calendar(self) -> str:
        """The native calendar the account watches."""
        return str(self.env.calendar)

    def check_converged(self) -> None:
        """After quiescence: cache and app mirror equal the provider."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix=f"cb-{self.fault_provider}-"))
        self.cm = self.make_env(fresh_sqlite_url(self.dir))
        self.env = self.loop.run_until_complete(self.cm.__aenter__())
        self.live = [self.env.insert(f"seed {i}", days=i + 1) for i in range(3)]
        self.n = 0
        self.run(self.env.advance(5))
        self.run(self.env.drain())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.check_converged()
        finally:
            try:
                self.run(self.cm.__aexit__(None, None, None))
            finally:
                self.loop.close()

    @rule(days=st.integers(0, 30))
    def native_create(self, days: int) -> None:
        self.n += 1
        self.live.append(self.env.insert(f"event {self.n}", days=days + 0.5))

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def native_update(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(self.live))
        self.n += 1
        self.env.world.update_event(self.native_calendar, event_id, summary=f"edit {self.n}")

    @precondition(lambda self: bool(self.live))
    @rule(data=st.data())
    def native_delete(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(self.live))
        self.live.remove(event_id)
        self.env.world.delete_event(self.native_calendar, event_id)

    @rule()
    def worker_runs(self) -> None:
        self.run(self.env.drain())

    @rule()
    def worker_runs_one_job(self) -> None:
        self.run(self._one())

    async def _one(self) -> None:
        job = await self.env.worker._claim()
        if job is not None:
            await self.env.worker._execute(job)

    @rule()
    def worker_crashes_holding_a_job(self) -> None:
        job = self.env.runtime.queue.claim(
            owner="crashed", kinds=list(self.env.service.handlers.kinds()), lease=CRASH_LEASE
        )
        if job is not None:  # the lease expires; another worker takes over
            self.run(self.env.advance(CRASH_LEASE + 1))

    @rule(fate=st.sampled_from(["drop", "duplicate"]), count=st.integers(1, 3))
    def notifications_misbehave(self, fate: str, count: int) -> None:
        faults = self.env.world.faults
        if fate == "drop":
            faults.drop_notifications(self.fault_provider, count)
        else:
            faults.duplicate_notifications(self.fault_provider, count)
