"""Sync rounds are counted by outcome and reach ``GET /metrics`` as counters summed over
every process on the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from calbridge import errors
from calbridge._tally import SYNC_ROUNDS, Tally
from calbridge.console import make_registry
from calbridge.store import CountKey
from tests.sync.support import draft_event, memory_env


def _counters(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_rounds_are_counted_by_outcome_and_scraped_from_every_process(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with memory_env(migrated_url) as env:
        assert env.account.id is not None
        env.backend.put(draft_event("work", "e1", "one"))
        tally = env.runtime.tally
        ok = CountKey(SYNC_ROUNDS, "memory", "ok")
        connected = tally.pending()  # connecting ran the first rounds
        assert set(connected) == {ok}
        await env.service.engine.sync(env.account.id, "work")
        assert tally.pending() == {ok: connected[ok] + 1}

        original = type(env.provider).changes

        async def failing(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            raise errors.Unavailable("connection reset", provider="memory")
            yield  # an async generator, as the provider's

        monkeypatch.setattr(type(env.provider), "changes", failing)
        with pytest.raises(errors.Unavailable):
            await env.service.engine.sync(env.account.id, "work")
        monkeypatch.setattr(type(env.provider), "changes", original)

        env.runtime.store.events.set_cursor(env.account.id, "work", "not-a-cursor")
        result = await env.service.engine.sync(env.account.id, "work")
        assert result.full  # the refused cursor, then the full read
        assert tally.pending() == {
            ok: connected[ok] + 2,
            CountKey(SYNC_ROUNDS, "memory", "error"): 1,
            CountKey(SYNC_ROUNDS, "memory", "cursor_expired"): 1,
        }
        assert tally.flush()
        another_process = Tally(env.runtime.engine, source="worker-2")
        another_process.add(SYNC_ROUNDS, "memory", "ok", n=5)
        another_process.close()

        text = generate_latest(make_registry(env.runtime.engine)).decode()
    rounds = _counters(text, "calbridge_sync_rounds_total")
    assert rounds == {
        (("outcome", "ok"), ("provider", "memory")): connected[ok] + 2 + 5,
        (("outcome", "error"), ("provider", "memory")): 1,
        (("outcome", "cursor_expired"), ("provider", "memory")): 1,
    }
