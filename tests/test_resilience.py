"""The shared client's transport makes provider calls resilient (issue #20): a request
marked with a ``ProviderCall`` and sent with a plain ``client.send`` is retried, goes
through the provider's circuit breaker and rate budget and is a client span, exactly as
through ``calbridge.send``; an unmarked request passes straight through; the answer of a
retried attempt is closed before the next attempt."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import calbridge
from calbridge import ProviderCall, RetryPolicy, errors
from calbridge._resilience import count_calls
from tests.test_http import FakeClock


class Body(httpx.AsyncByteStream):
    """An answer's body that records when it is closed."""

    def __init__(self, log: list[str], name: str, *, fail: bool = False) -> None:
        self.log = log
        self.name = name
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"ok": '
        if self.fail:
            raise httpx.ReadError("connection reset while reading the body")
        yield b"true}"

    async def aclose(self) -> None:
        self.log.append(f"closed {self.name}")


class Scripted(httpx.AsyncBaseTransport):
    """Answers in turn with the given statuses (``"read error"``: a body cut short;
    ``"connect error"``: no connection)."""

    def __init__(self, *answers: int | str) -> None:
        self.answers = list(answers)
        self.log: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers.pop(0)
        if answer == "connect error":
            raise httpx.ConnectError("connection refused")
        name = f"{len([e for e in self.log if e.startswith('sent')]) + 1}"
        self.log.append(f"sent {name}")
        if answer == "read error":
            return httpx.Response(200, stream=Body(self.log, name, fail=True))
        assert isinstance(answer, int)
        headers = {"Retry-After": "1"} if answer in {429, 503} else {}
        return httpx.Response(answer, headers=headers, stream=Body(self.log, name))


class Budget:
    """A rate budget that records its grants and pauses."""

    provider = "acme"

    def __init__(self) -> None:
        self.log: list[str] = []

    @staticmethod
    def counts(request: httpx.Request) -> bool:
        return calbridge.RateBudget.counts(request)

    async def acquire(self, priority: Any = None, *, max_wait: float | None = None) -> float:
        self.log.append("grant")
        return 0.0

    async def apause(self, seconds: float | None = None) -> float:
        self.log.append(f"pause {seconds}")
        return seconds or 0.0


def call(clock: FakeClock, **kwargs: Any) -> ProviderCall:
    return ProviderCall(
        provider="acme", sleep=clock.sleep, rng=lambda: 1.0, clock=clock.time, **kwargs
    )


async def test_a_plain_send_of_a_marked_request_is_retried() -> None:
    clock = FakeClock()
    inner = Scripted(429, 503, 200)
    async with calbridge.make_http_client(transport=inner) as http:
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
        response = await http.send(request)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert clock.sleeps == [1.0, 1.0]  # Retry-After
    # each retried answer was read and closed before the next attempt went out
    assert inner.log == ["sent 1", "closed 1", "sent 2", "closed 2", "sent 3", "closed 3"]


async def test_httpx_shortcuts_take_the_extensions() -> None:
    clock = FakeClock()
    inner = Scripted(502, 200)
    async with calbridge.make_http_client(transport=inner) as http:
        response = await http.get("https://api.acme.test/v1/x", extensions=call(clock).extensions())
    assert response.status_code == 200
    assert clock.sleeps == [0.25]  # backoff: rng 1.0 gives the ceiling


async def test_non_idempotent_and_long_waits_keep_their_rules() -> None:
    clock = FakeClock()
    async with calbridge.make_http_client(transport=Scripted(503, 200)) as http:
        request = call(clock).apply(http.build_request("POST", "https://api.acme.test/v1/x"))
        assert (await http.send(request)).status_code == 503  # a POST's 503: not repeated
    inner = Scripted(429)
    async with calbridge.make_http_client(transport=inner) as http:
        marked = call(clock, policy=RetryPolicy(max_wait=0.5))
        request = marked.apply(http.build_request("POST", "https://api.acme.test/v1/x"))
        with pytest.raises(errors.RateLimited) as info:
            await http.send(request)
    assert info.value.retry_after == 1.0
    assert inner.log == ["sent 1", "closed 1"]


async def test_a_body_cut_short_is_retried_for_a_get_and_raised_for_a_post() -> None:
    clock = FakeClock()
    inner = Scripted("read error", 200)
    async with calbridge.make_http_client(transport=inner) as http:
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
        assert (await http.send(request)).json() == {"ok": True}
    assert inner.log == ["sent 1", "closed 1", "sent 2", "closed 2"]
    async with calbridge.make_http_client(transport=Scripted("read error", 200)) as http:
        request = call(clock).apply(http.build_request("POST", "https://api.acme.test/v1/x"))
        with pytest.raises(errors.Unavailable, match="ReadError"):
            await http.send(request)


async def test_a_streamed_call_closes_the_retried_answers_and_streams_the_last() -> None:
    clock = FakeClock()
    inner = Scripted(503, 200)
    async with calbridge.make_http_client(transport=inner) as http:
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        assert inner.log == ["sent 1", "closed 1", "sent 2"]  # the last one not read yet
        assert await response.aread() == b'{"ok": true}'
        await response.aclose()
    assert inner.log == ["sent 1", "closed 1", "sent 2", "closed 2"]


async def test_an_unmarked_request_passes_straight_through() -> None:
    inner = Scripted(503, 200)
    budget = Budget()
    async with calbridge.make_http_client(
        transport=inner, breaker=calbridge.BreakerPolicy(threshold=1)
    ) as http:
        calbridge.install_rate_budget(http, budget)  # type: ignore[arg-type]
        assert (await http.get("https://api.acme.test/v1/x")).status_code == 503
        assert budget.log == []
        breaker = calbridge.circuit_breaker(http, "acme")
        assert breaker is not None
        assert breaker.state == "closed"
    assert inner.log == ["sent 1", "closed 1"]


async def test_a_plain_send_goes_through_the_breaker() -> None:
    clock = FakeClock()
    inner = Scripted(500, 500, 200)
    async with calbridge.make_http_client(
        transport=inner, breaker=calbridge.BreakerPolicy(threshold=2, cooldown=60)
    ) as http:

        async def send() -> httpx.Response:
            marked = call(clock, policy=RetryPolicy(attempts=1))
            return await http.send(marked.apply(http.build_request("GET", "https://a.test/x")))

        assert (await send()).status_code == 500
        assert (await send()).status_code == 500
        with pytest.raises(errors.Unavailable, match="circuit breaker open") as info:
            await send()
    assert info.value.retry_after == pytest.approx(60.0, abs=1)
    assert [e for e in inner.log if e.startswith("sent")] == ["sent 1", "sent 2"]


async def test_a_plain_send_takes_grants_and_a_429_pauses_the_budget() -> None:
    clock = FakeClock()
    budget = Budget()
    async with calbridge.make_http_client(transport=Scripted(429, 200, 200)) as http:
        calbridge.install_rate_budget(http, budget)  # type: ignore[arg-type]
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
        assert (await http.send(request)).status_code == 200
        assert budget.log == ["grant", "pause 1.0", "grant"]
        token = call(clock).apply(http.build_request("POST", "https://api.acme.test/oauth/token"))
        assert (await http.send(token)).status_code == 200
        assert budget.log == ["grant", "pause 1.0", "grant"]  # token calls are not counted


async def test_every_attempt_is_counted_by_outcome_on_any_client() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    counter = lambda provider, outcome: seen.append((provider, outcome))  # noqa: E731
    inner = Scripted("connect error", 429, 503, 200, 404, 200)
    async with calbridge.make_http_client(transport=inner) as http:
        count_calls(http, counter)
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
        assert (await http.send(request)).status_code == 200
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/y"))
        assert (await http.send(request)).status_code == 404
        assert (await http.get("https://api.acme.test/plain")).status_code == 200
    assert seen == [
        ("acme", "error"),
        ("acme", "429"),
        ("acme", "5xx"),
        ("acme", "2xx"),
        ("acme", "4xx"),
    ]  # the unmarked request is not a call
    seen.clear()
    async with httpx.AsyncClient(transport=Scripted(502, 302)) as plain:
        count_calls(plain, counter)
        request = plain.build_request("GET", "https://api.acme.test/v1/x")
        response = await calbridge.send(plain, request, provider="acme", sleep=clock.sleep)
        assert response.status_code == 302
    assert seen == [("acme", "5xx"), ("acme", "3xx")]


async def test_send_marks_the_request_and_the_client_does_the_rest() -> None:
    """calbridge.send on the shared client is the marked request's plain send."""
    clock = FakeClock()
    async with calbridge.make_http_client(transport=Scripted(503, 200)) as http:
        request = http.build_request("GET", "https://api.acme.test/v1/x")
        response = await calbridge.send(
            http, request, provider="acme", sleep=clock.sleep, clock=clock.time
        )
        assert response.status_code == 200
        marked = ProviderCall.of(request)
        assert marked is not None
        assert marked.provider == "acme"
    assert clock.sleeps == [1.0]
    assert ProviderCall.of(httpx.Request("GET", "https://a.test/")) is None


@pytest.fixture
def client_spans(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An exporter of calbridge's spans in this test (a tracer provider of its own: the
    global one is left to tests/bridge/test_tracing.py)."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra and the SDK (make test)")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    return exporter


async def test_a_plain_send_is_a_client_span(client_spans: Any) -> None:
    clock = FakeClock()
    async with calbridge.make_http_client(transport=Scripted(503, 404, 404)) as http:
        request = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x?q=1"))
        assert (await http.send(request)).status_code == 404
        assert (await http.get("https://api.acme.test/v1/plain")).status_code == 404
    found = [s for s in client_spans.get_finished_spans() if s.kind.name == "CLIENT"]
    (only,) = found  # one span for the call and its retry; none for the unmarked request
    assert only.name == "GET"
    expected = {
        "calbridge.provider": "acme",
        "http.request.method": "GET",
        "server.address": "api.acme.test",
        "http.response.status_code": 404,
        "error.type": "404",
    }
    assert {k: only.attributes[k] for k in expected} == expected


async def test_read_answers_are_freed_without_the_garbage_collector() -> None:
    """The shared client unlinks every read answer from httpx's self-referencing stream,
    however it was sent (see ``_unlinked``)."""
    clock = FakeClock()
    async with calbridge.make_http_client(transport=Scripted(503, 200, 200)) as http:
        gc.collect()
        gc.disable()
        try:
            marked = call(clock).apply(http.build_request("GET", "https://api.acme.test/v1/x"))
            for marked_too in (True, False):
                if marked_too:
                    response = await http.send(marked)
                else:
                    response = await http.get("https://a.test/")
                assert response.json() == {"ok": True}
                ref = weakref.ref(response)
                del response
                assert ref() is None
        finally:
            gc.enable()
