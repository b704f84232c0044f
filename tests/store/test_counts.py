"""Counts every process adds to (``metric_counts``) and this process's :class:`Tally`,
on SQLite and PostgreSQL: summed across sources, retired sources folded without the
sums going down, a refused write keeping its counts."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from calbridge._tally import PROVIDER_CALLS, SYNC_ROUNDS, Tally
from calbridge.store import CountKey, CountRows, schema

OK = CountKey(SYNC_ROUNDS, "google", "ok")
ERROR = CountKey(SYNC_ROUNDS, "google", "error")
THROTTLED_CRONOFY = CountKey(PROVIDER_CALLS, "cronofy", "429")


def _totals(rows: CountRows) -> dict[CountKey, int]:
    return {total.key: total.value for total in rows.totals()}


def test_sources_add_up_and_retired_sources_keep_their_counts(engine: sa.Engine) -> None:
    rows = CountRows(engine)
    rows.add("host-a:1:1", {OK: 3, ERROR: 1})
    rows.add("host-b:2:1", {OK: 2, THROTTLED_CRONOFY: 5})
    rows.add("host-a:1:1", {OK: 4})
    assert _totals(rows) == {OK: 9, ERROR: 1, THROTTLED_CRONOFY: 5}

    with engine.begin() as conn:  # host-a went quiet two days ago
        conn.execute(
            schema.metric_counts.update()
            .where(schema.metric_counts.c.source == "host-a:1:1")
            .values(updated_ms=int((time.time() - 2 * 86_400) * 1000))
        )
    assert rows.retire(idle_for=86_400) == 1
    assert rows.retire(idle_for=86_400) == 0
    assert _totals(rows) == {OK: 9, ERROR: 1, THROTTLED_CRONOFY: 5}
    with engine.connect() as conn:
        sources = set(conn.execute(sa.select(schema.metric_counts.c.source)).scalars())
    assert sources == {"retired", "host-b:2:1"}
    rows.add("host-c:3:1", {OK: 1})  # later counts add to the sums as before
    assert _totals(rows)[OK] == 10


def test_a_tally_counts_in_memory_and_writes_on_flush_and_close(engine: sa.Engine) -> None:
    rows = CountRows(engine)
    tally = Tally(engine, interval=3600.0, source="proc-1")
    other = Tally(engine, interval=3600.0, source="proc-2")
    try:
        tally.add(SYNC_ROUNDS, "google", "ok")
        tally.add(SYNC_ROUNDS, "google", "ok")
        other.count_call("cronofy", "429")
        assert _totals(rows) == {}  # nothing written before a flush
        assert tally.pending() == {OK: 2}
        assert tally.flush()
        assert tally.pending() == {}
        assert _totals(rows) == {OK: 2}
        tally.add(SYNC_ROUNDS, "google", "error")
    finally:
        tally.close()
        other.close()
    assert _totals(rows) == {OK: 2, ERROR: 1, THROTTLED_CRONOFY: 1}
    assert "proc-1" in repr(tally)


def test_counts_from_many_threads_are_all_written(engine: sa.Engine) -> None:
    tally = Tally(engine, interval=0.05, source="threads")

    def count() -> None:
        for _ in range(200):
            tally.add(SYNC_ROUNDS, "google", "ok")

    workers = [threading.Thread(target=count) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    tally.close()
    assert _totals(CountRows(engine)) == {OK: 800}


def test_a_refused_write_keeps_the_counts_for_the_next(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = Tally(engine, interval=3600.0, source="proc-1")
    tally.add(PROVIDER_CALLS, "cronofy", "429", n=2)
    refused = [True]
    real_add = CountRows.add

    def add(self: CountRows, source: str, counts: object) -> None:
        if refused:
            refused.clear()
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        real_add(self, source, counts)  # type: ignore[arg-type]

    monkeypatch.setattr(CountRows, "add", add)
    assert tally.flush() is False
    assert tally.pending() == {THROTTLED_CRONOFY: 2}
    tally.count_call("cronofy", "429")
    assert tally.flush() is True
    tally.close()
    assert _totals(CountRows(engine)) == {THROTTLED_CRONOFY: 3}


async def test_the_shared_clients_calls_are_counted_and_scraped(engine: sa.Engine) -> None:
    """Every attempt of a provider call on a runtime's client is counted by outcome, with
    or without a rate budget, and ``GET /metrics`` shows them (429s also as throttled)."""
    import httpx
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    import calbridge
    from calbridge import BridgeConfig
    from calbridge._runtime import Runtime
    from calbridge.console import make_registry

    answers = [429, 200, 404, 503]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/plain":
            return httpx.Response(200)
        status = answers.pop(0)
        return httpx.Response(status, headers={"Retry-After": "0"} if status == 429 else {})

    config = BridgeConfig(database_url=str(engine.url.render_as_string(hide_password=False)))
    runtime = Runtime.open(config, transport=httpx.MockTransport(answer))
    try:
        http = runtime.http
        assert (
            await calbridge.send(
                http, http.build_request("GET", "https://a.test/x"), provider="acme"
            )
        ).status_code == 200
        get = http.build_request("GET", "https://a.test/y")
        assert (await calbridge.send(http, get, provider="acme")).status_code == 404
        post = http.build_request("POST", "https://b.test/z")
        assert (await calbridge.send(http, post, provider="other")).status_code == 503
        assert (await http.get("https://a.test/plain")).status_code == 200  # not a call
        assert runtime.tally.pending() == {
            CountKey(PROVIDER_CALLS, "acme", "429"): 1,
            CountKey(PROVIDER_CALLS, "acme", "2xx"): 1,
            CountKey(PROVIDER_CALLS, "acme", "4xx"): 1,
            CountKey(PROVIDER_CALLS, "other", "5xx"): 1,
        }
    finally:
        await runtime.aclose()
    text = generate_latest(make_registry(engine)).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("calbridge_provider_")
    }
    assert samples == {
        ("calbridge_provider_calls_total", (("outcome", "429"), ("provider", "acme"))): 1,
        ("calbridge_provider_calls_total", (("outcome", "2xx"), ("provider", "acme"))): 1,
        ("calbridge_provider_calls_total", (("outcome", "4xx"), ("provider", "acme"))): 1,
        ("calbridge_provider_calls_total", (("outcome", "5xx"), ("provider", "other"))): 1,
        ("calbridge_provider_throttled_total", (("provider", "acme"),)): 1,
    }
