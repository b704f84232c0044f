"""S1 with the Cronofy sandbox: a Hypothesis state machine over real loopback HTTP.

Native creates, updates and deletes happen in the world behind the app's back; Cronofy's
notifications are dropped or duplicated by the sandbox's fault plan; Cronofy's API fails
now and then (sync jobs retry); workers crash holding a job; the clock advances (channel
and token expiry, delivery retries); cursors are invalidated. After quiescence the event
cache, and the mirror the app built from delivered batches, equal what Cronofy shows.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from tests.sync.cronofy_support import CronofyEnv, cronofy_env
from tests.sync.machine import SandboxSyncMachine


class CronofySyncMachine(SandboxSyncMachine):
    fault_provider = "cronofy"
    env: CronofyEnv

    def make_env(self, url: str) -> AbstractAsyncContextManager[Any]:
        return cronofy_env(url)

    @property
    def native_calendar(self) -> str:
        return str(self.env.native_calendar)

    @rule()
    def cronofy_api_fails_once(self) -> None:
        self.env.world.faults.fail_next("cronofy", status=503)

    @rule(seconds=st.sampled_from([3.0, 60.0, 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self.env.advance(seconds))

    @rule()
    def cursor_invalidated(self) -> None:
        assert self.env.account.id is not None
        for cal in self.env.cronofy_calendars():
            if self.env.runtime.store.events.get_cursor(self.env.account.id, cal) is not None:
                self.env.runtime.store.events.set_cursor(self.env.account.id, cal, "garbage")

    @invariant()
    def batches_are_unique(self) -> None:
        ids = self.env.mirror.batch_ids
        assert len(ids) == len(set(ids))

    def check_converged(self) -> None:
        env = self.env
        env.world.faults.clear()
        self.run(env.advance(600))
        self.run(env.drain())
        assert env.account.id is not None
        for cal in env.cronofy_calendars():
            env.runtime.queue.enqueue(
                "reconcile", {"account": env.account.id, "calendar": cal, "tick": True}
            )
        for _ in range(3):  # retries after injected 503s come due within minutes
            self.run(env.drain())
            self.run(env.advance(300))
        self.run(env.drain())
        remote = env.remote()
        assert env.cache() == remote
        assert env.mirror_view() == remote


TestCronofySync = CronofySyncMachine.TestCase
TestCronofySync.settings = settings(
    max_examples=8,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
