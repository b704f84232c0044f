"""Circuit breakers (reliability R6): a 5xx storm opens a provider's circuit after the
threshold; open calls make no network I/O; a half-open probe follows the cooldown; 4xx
answers, ``invalid_grant`` and 429s do not trip it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from calbridge_cronofy import CronofyProvider
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import calbridge
from calbridge import errors
from calbridge.sandbox import serve_in_thread


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


def _breaker(threshold: int = 3, cooldown: float = 30.0) -> tuple[calbridge.CircuitBreaker, Clock]:
    clock = Clock()
    policy = calbridge.BreakerPolicy(threshold=threshold, cooldown=cooldown, clock=clock)
    return calbridge.CircuitBreaker("acme", policy), clock


def _state(breaker: calbridge.CircuitBreaker) -> str:
    return breaker.state  # read afresh (mypy would narrow the property across calls)


def test_opens_after_the_threshold_and_probes_after_the_cooldown() -> None:
    breaker, clock = _breaker()
    for _ in range(2):
        assert breaker.enter() is False
        breaker.failed()
    assert _state(breaker) == "closed"
    assert breaker.failures == 2
    breaker.enter()
    breaker.failed()
    assert _state(breaker) == "open"
    clock.now += 10
    with pytest.raises(errors.Unavailable) as info:
        breaker.enter()
    assert info.value.retry_after == pytest.approx(20.0)
    assert info.value.provider == "acme"
    assert "circuit breaker open" in str(info.value)
    clock.now += 20
    assert _state(breaker) == "half_open"
    assert breaker.enter() is True  # the probe
    with pytest.raises(errors.Unavailable) as info:
        breaker.enter()  # one probe at a time
    assert info.value.retry_after == pytest.approx(1.0)
    breaker.failed(probe=True)  # the probe failed: open for another cooldown
    assert _state(breaker) == "open"
    clock.now += 30
    assert breaker.enter() is True
    breaker.succeeded(probe=True)
    assert _state(breaker) == "closed"
    assert breaker.failures == 0
    assert breaker.enter() is False


def test_a_success_resets_the_count_and_a_released_probe_lets_another_go() -> None:
    breaker, clock = _breaker(threshold=2)
    breaker.failed()
    breaker.succeeded()  # an answer (a 4xx too) in between: not in a row
    breaker.failed()
    assert _state(breaker) == "closed"
    breaker.failed()
    assert _state(breaker) == "open"
    clock.now += 30
    assert breaker.enter() is True
    breaker.released(probe=True)  # e.g. a 429 or a cancelled call: says nothing
    assert _state(breaker) == "half_open"
    assert breaker.enter() is True


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        calbridge.BreakerPolicy(threshold=0)
    with pytest.raises(ValueError, match="cooldown"):
        calbridge.BreakerPolicy(cooldown=0)


class Upstream:
    """A real server on loopback answering with the status it is set to, counting requests."""

    def __init__(self) -> None:
        self.status = 503
        self.requests = 0

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        body = {"error": "invalid_grant"} if self.status == 400 else {"ok": True}
        return Response(json.dumps(body), status_code=self.status, media_type="application/json")


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    from starlette.applications import Starlette

    up = Upstream()
    app = Starlette(routes=[Route("/x", up.handle, methods=["GET", "POST"])])
    with serve_in_thread(app) as server:
        yield up, server.base_url


async def test_a_5xx_storm_opens_the_circuit_over_real_http(
    upstream: tuple[Upstream, str],
) -> None:
    """R6 over loopback with the shared client's default transport: three calls failing
    after their retries open the circuit; then calls fail at once and the server sees no
    request; after the cooldown one probe goes, and its success closes the circuit."""
    up, base = upstream
    clock = Clock()
    policy = calbridge.RetryPolicy(attempts=2)
    async with calbridge.make_http_client(
        breaker=calbridge.BreakerPolicy(threshold=3, cooldown=30, clock=clock)
    ) as http:

        async def call(method: str = "GET") -> httpx.Response:
            request = http.build_request(method, f"{base}/x")
            return await calbridge.send(
                http, request, provider="acme", policy=policy, sleep=_no_sleep
            )

        for _ in range(3):
            assert (await call()).status_code == 503  # each after its retry
        assert up.requests == 6
        breaker = calbridge.circuit_breaker(http, "acme")
        assert breaker is not None
        assert _state(breaker) == "open"
        for _ in range(5):
            with pytest.raises(errors.Unavailable) as info:
                await call()
            assert info.value.retry_after == pytest.approx(30.0)
        assert up.requests == 6  # open calls made no network I/O
        other = calbridge.circuit_breaker(http, "other")
        assert other is not None
        assert _state(other) == "closed"  # one circuit per provider
        clock.now += 30
        up.status = 200
        assert (await call()).status_code == 200  # the probe
        assert up.requests == 7
        assert _state(breaker) == "closed"
        assert (await call()).status_code == 200


async def test_4xx_invalid_grant_and_429_do_not_trip_it(upstream: tuple[Upstream, str]) -> None:
    up, base = upstream
    async with calbridge.make_http_client(
        breaker=calbridge.BreakerPolicy(threshold=2, cooldown=30, clock=Clock())
    ) as http:

        async def call() -> int:
            request = http.build_request("POST", f"{base}/x")
            response = await calbridge.send(
                http,
                request,
                provider="acme",
                policy=calbridge.RetryPolicy(attempts=1),
                sleep=_no_sleep,
            )
            return response.status_code

        for status in (400, 401, 403, 404, 422, 429):
            up.status = status
            for _ in range(3):
                assert await call() == status
        breaker = calbridge.circuit_breaker(http, "acme")
        assert breaker is not None
        assert _state(breaker) == "closed"
        assert breaker.failures == 0
        assert up.requests == 18


async def test_no_breaker_when_turned_off_or_on_a_plain_client() -> None:
    async with calbridge.make_http_client(breaker=None) as http:
        assert calbridge.circuit_breaker(http, "acme") is None
    async with httpx.AsyncClient() as plain:
        assert calbridge.circuit_breaker(plain, "acme") is None


async def test_a_provider_outage_stops_cronofy_calls() -> None:
    """The Cronofy plugin goes through the breaker like every provider using send: its
    calls to a failing Cronofy stop reaching it once the circuit opens."""
    seen: list[str] = []

    def cronofy(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(500, json={"error": "down"})

    async with calbridge.make_http_client(
        transport=httpx.MockTransport(cronofy),
        breaker=calbridge.BreakerPolicy(threshold=2, cooldown=60, clock=Clock()),
    ) as http:
        provider = CronofyProvider(
            http=http,
            settings=calbridge.ProviderSettings(
                client_id="cats",
                client_secret="secret",
                options={"rate_limiters": (), "retry": calbridge.RetryPolicy(attempts=1)},
            ),
        )
        session = calbridge.Session(
            account=calbridge.Account(
                app_user_id="u", provider="cronofy", provider_account_id="acc_1"
            ),
            tokens=calbridge.StaticTokenSource(
                tokens=calbridge.TokenSet(access_token=calbridge.Secret("tok"))
            ),
        )
        for _ in range(2):
            with pytest.raises(errors.Unavailable):
                await provider.list_calendars(session)
        assert len(seen) == 2
        with pytest.raises(errors.Unavailable, match="circuit breaker open") as info:
            await provider.list_calendars(session)
        assert info.value.provider == "cronofy"
        assert info.value.retry_after == pytest.approx(60.0)
        assert len(seen) == 2
