"""S1 / W-faults as a Hypothesis state machine over the reference provider.

Remote creates, updates and deletes happen behind the app's back; notifications are
delivered, dropped, duplicated or held back and delivered out of order; workers crash
holding a job (the lease expires); the clock passes channel expiry; cursors get invalidated.
After quiescence (held notifications delivered, queue drained, one reconciliation) the event
cache equals the provider's state and the app's mirror, built only from delivered
batches, equals it too.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import calbridge
from tests.sync.support import Env, draft_event, fresh_sqlite_url, memory_env

CALENDARS = ("work", "home")
IDS = [f"ev{i}" for i in range(6)]


class MemorySyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="cb-stateful-"))
        self.cm = memory_env(fresh_sqlite_url(self.dir), calendars=CALENDARS)
        self.env: Env = self.loop.run_until_complete(self.cm.__aenter__())
        self.held: list[calbridge.WebhookRequest] = []
        self.seq = 1000
        self.version = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        try:
            self.check_converged()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self.run(self.cm.__aexit__(None, None, None))
        finally:
            self.loop.close()

    # ------------------------------------------------------------ remote changes

    def _notification(self, cal: str) -> calbridge.WebhookRequest | None:
        for rec in self.env.channels():
            ch = rec.channel
            if cal in ch.calendar_ids and ch.id in self.env.backend.channels:
                self.seq += 1
                return self.env.provider.notification_for(ch, seq=self.seq)
        return None

    @rule(
        cal=st.sampled_from(CALENDARS),
        event_id=st.sampled_from(IDS),
        fate=st.sampled_from(["send", "drop", "duplicate", "hold"]),
    )
    def remote_upsert(self, cal: str, event_id: str, fate: str) -> None:
        self.version += 1
        self.env.backend.put(draft_event(cal, event_id, f"{event_id} v{self.version}"))
        self._notify(cal, fate)

    @rule(
        cal=st.sampled_from(CALENDARS),
        event_id=st.sampled_from(IDS),
        fate=st.sampled_from(["send", "drop", "duplicate", "hold"]),
    )
    def remote_delete(self, cal: str, event_id: str, fate: str) -> None:
        if self.env.backend.remove(cal, event_id):
            self._notify(cal, fate)

    def _notify(self, cal: str, fate: str) -> None:
        request = self._notification(cal)
        if request is None or fate == "drop":
            return
        if fate == "hold":
            self.held.append(request)
            return
        for _ in range(2 if fate == "duplicate" else 1):
            assert self.run(self.env.post(request)).status_code in (200, 202)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def deliver_held_out_of_order(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.held) - 1))
        request = self.held.pop(index)
        # a notification for a channel that was replaced meanwhile is refused (4xx)
        assert self.run(self.env.post(request)).status_code in (200, 202, 401, 404)

    # ------------------------------------------------------------ workers and time

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
            owner="crashed", kinds=list(self.env.service.handlers.kinds()), lease=30.0
        )
        if job is not None:
            self.env.clock.advance(31)  # the lease expires; another worker takes over

    @rule(seconds=st.sampled_from([60.0, 3600.0, 86400.0 + 60]))
    def clock_advances(self, seconds: float) -> None:
        self.env.clock.advance(seconds)

    @rule(cal=st.sampled_from(CALENDARS))
    def cursor_invalidated(self, cal: str) -> None:
        assert self.env.account.id is not None
        if self.env.runtime.store.events.get_cursor(self.env.account.id, cal) is not None:
            self.env.runtime.store.events.set_cursor(self.env.account.id, cal, "expired")

    # ------------------------------------------------------------ invariants

    @invariant()
    def delivered_batches_are_unique(self) -> None:
        ids = self.env.mirror.batch_ids
        assert len(ids) == len(set(ids))

    def quiesce(self) -> None:
        env = self.env
        for request in self.held:
            self.run(env.post(request))
        self.held.clear()
        env.clock.advance(3600)
        self.run(env.drain())
        assert env.account.id is not None
        for cal in CALENDARS:
            env.runtime.queue.enqueue(
                "reconcile", {"account": env.account.id, "calendar": cal, "tick": True}
            )
        self.run(env.drain())

    def check_converged(self) -> None:
        self.quiesce()
        for cal in CALENDARS:
            remote = self.env.remote(cal)
            assert self.env.cache(cal) == remote
            assert self.env.mirror.view(cal) == remote


class ConvergingMachine(MemorySyncMachine):
    @rule()
    def converges_after_quiescence(self) -> None:
        self.check_converged()


TestMemorySync = ConvergingMachine.TestCase
TestMemorySync.settings = settings(
    max_examples=6,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
