"""Retry behaviour of calbridge.send, with a fake clock."""

from __future__ import annotations

import email.utils
import gc
import weakref

import httpx
import pytest

import calbridge
from calbridge import RetryPolicy, errors, parse_retry_after, send
from calbridge.testing import mock_client

NOW = 1_800_000_000.0


class FakeClock:
    """Records sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def time(self) -> float:
        return self.now


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return mock_client(handler), seen


async def run(
    client: httpx.AsyncClient,
    clock: FakeClock,
    method: str = "GET",
    *,
    policy: RetryPolicy | None = None,
    idempotent: bool | None = None,
) -> httpx.Response:
    req = client.build_request(method, "https://api.example.test/v1/events?token=hidden")
    return await send(
        client,
        req,
        provider="test",
        sleep=clock.sleep,
        rng=lambda: 1.0,
        clock=clock.time,
        policy=policy,
        idempotent=idempotent,
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    """Delay-seconds (fractional too) parse; garbage is None; negatives clamp to 0."""
    assert parse_retry_after(header, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    """HTTP-dates become seconds from now; past dates become 0."""
    future = email.utils.formatdate(NOW + 7, usegmt=True)
    past = email.utils.formatdate(NOW - 70, usegmt=True)
    assert parse_retry_after(future, now=NOW) == pytest.approx(7.0)
    assert parse_retry_after(past, now=NOW) == 0.0


async def test_retry_after_seconds_honoured() -> None:
    """A 429 with Retry-After: 2.5 waits exactly 2.5 s then succeeds."""
    clock = FakeClock()
    client, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "2.5"}), httpx.Response(200, json={"ok": True})
    )
    resp = await run(client, clock)
    assert resp.status_code == 200
    assert clock.sleeps == [2.5]
    assert len(seen) == 2


async def test_retry_after_http_date_honoured() -> None:
    """A 503 with an HTTP-date Retry-After waits until that date."""
    clock = FakeClock()
    when = email.utils.formatdate(NOW + 4, usegmt=True)
    client, _ = scripted(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200))
    assert (await run(client, clock)).status_code == 200
    assert clock.sleeps == [pytest.approx(4.0)]


async def test_garbage_retry_after_falls_back_to_backoff() -> None:
    """Unparseable Retry-After uses exponential backoff (rng=1.0 gives the ceiling)."""
    clock = FakeClock()
    policy = RetryPolicy(attempts=4, initial_backoff=0.5, max_backoff=8)
    client, seen = scripted(
        *(httpx.Response(502, headers={"Retry-After": "later"}) for _ in range(3)),
        httpx.Response(200),
    )
    assert (await run(client, clock, policy=policy)).status_code == 200
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(seen) == 4


async def test_full_jitter_is_bounded() -> None:
    """Backoff is uniform in [0, ceiling]."""
    policy = RetryPolicy(initial_backoff=1, max_backoff=3)
    assert policy.backoff(1, rng=lambda: 0.0) == 0.0
    assert policy.backoff(5, rng=lambda: 0.999) == pytest.approx(3 * 0.999)


async def test_long_retry_after_is_surfaced_not_slept() -> None:
    """A wait beyond max_wait raises RateLimited carrying the delay; nothing sleeps."""
    clock = FakeClock()
    client, seen = scripted(httpx.Response(429, headers={"Retry-After": "3600"}))
    with pytest.raises(errors.RateLimited) as info:
        await run(client, clock, policy=RetryPolicy(max_wait=30))
    assert info.value.retry_after == 3600
    assert clock.sleeps == []
    assert len(seen) == 1


async def test_exhausted_retries_return_last_response() -> None:
    """After the last attempt the provider sees the final status to map it."""
    clock = FakeClock()
    client, seen = scripted(*(httpx.Response(504) for _ in range(3)))
    resp = await run(client, clock, policy=RetryPolicy(attempts=3))
    assert resp.status_code == 504
    assert len(seen) == 3


async def test_post_without_idempotency_key_not_retried_on_read_error() -> None:
    """A POST whose response was lost may have had its effect: do not repeat it."""
    clock = FakeClock()
    client, seen = scripted(httpx.ReadError("reset"), httpx.Response(201))
    with pytest.raises(errors.Unavailable) as info:
        await run(client, clock, method="POST")
    assert len(seen) == 1
    assert "hidden" not in str(info.value)


async def test_post_with_idempotency_key_is_retried_on_read_error() -> None:
    """idempotent=True allows repeating a POST."""
    clock = FakeClock()
    client, seen = scripted(httpx.ReadError("reset"), httpx.Response(201))
    assert (await run(client, clock, method="POST", idempotent=True)).status_code == 201
    assert len(seen) == 2


async def test_post_retried_on_connect_error_and_429() -> None:
    """Connect errors and 429 never reached the handler: safe to repeat any method."""
    clock = FakeClock()
    client, seen = scripted(
        httpx.ConnectError("refused"),
        httpx.Response(429, headers={"Retry-After": "1"}),
        httpx.Response(201),
    )
    assert (await run(client, clock, method="POST")).status_code == 201
    assert len(seen) == 3


async def test_post_not_retried_on_503() -> None:
    """A 503 to a POST is returned for the provider to map, not repeated."""
    clock = FakeClock()
    client, seen = scripted(httpx.Response(503), httpx.Response(201))
    assert (await run(client, clock, method="POST")).status_code == 503
    assert len(seen) == 1


async def test_timeouts_become_unavailable_without_the_query() -> None:
    """Persistent timeouts raise Unavailable; the URL's query (which may hold a code) is cut."""
    clock = FakeClock()
    client, seen = scripted(*(httpx.ReadTimeout("slow") for _ in range(2)))
    with pytest.raises(errors.Unavailable) as info:
        await run(client, clock, policy=RetryPolicy(attempts=2))
    assert len(seen) == 2
    assert "token=hidden" not in str(info.value)
    assert "api.example.test/v1/events" in str(info.value)


async def test_rate_limiter_spaces_calls() -> None:
    """At most `limit` acquisitions per period on a fake clock."""
    clock = FakeClock()
    limiter = calbridge.RateLimiter(limit=3, period=1.0, clock=clock.time, sleep=clock.sleep)
    for _ in range(7):
        async with limiter:
            pass
    assert clock.now - NOW == pytest.approx(2.0)


def test_shared_client_settings() -> None:
    """The shared client has a calbridge user agent, pooled limits and no redirects."""
    client = calbridge.make_http_client(max_connections=7)
    assert client.headers["user-agent"].startswith("calbridge/")
    assert client.follow_redirects is False


def test_read_json_names_what_was_unreadable() -> None:
    """read_json returns the JSON, or a ProviderResponseError naming the call."""
    assert calbridge.read_json(httpx.Response(200, json={"a": 1}), provider="p") == {"a": 1}
    with pytest.raises(
        errors.ProviderResponseError, match="list calendars: the answer is not JSON"
    ):
        calbridge.read_json(httpx.Response(502, text="<html>"), provider="p", what="list calendars")


async def test_shared_client_keeps_no_cookies() -> None:
    """A cookie one user's answer set never rides along on the next request (any user's)."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"set-cookie": "affinity=user-a; Path=/"})

    async with calbridge.make_http_client(transport=httpx.MockTransport(handler)) as client:
        for path in ("/v1/calendars", "/v1/events", "/v1/events"):
            await client.get(f"https://api.cronofy.com{path}")
        assert len(client.cookies) == 0
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies.set("affinity", "forced")
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies = {"affinity": "forced"}
    assert sent == [None, None, None]


async def test_sent_responses_are_freed_without_the_garbage_collector() -> None:
    """httpx links a response and its stream both ways; send() unlinks a read response, so
    its body (a whole page) goes as soon as the caller drops it, not at the next GC run."""
    body = b'{"events": []}' * 1000
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/flaky":
            answer = next(answers)
            return httpx.Response(answer.status_code, headers=answer.headers, content=body)
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async def nothing(_: float) -> None:
        return None

    gc.collect()
    gc.disable()
    try:
        async with calbridge.make_http_client(transport=httpx.MockTransport(handler)) as client:
            for path in ("/page", "/flaky"):
                response = await send(
                    client,
                    client.build_request("GET", f"https://x.test{path}"),
                    provider="p",
                    sleep=nothing,
                )
                assert response.status_code == 200
                assert response.content == body
                assert await response.aread() == body
                assert response.is_closed
                ref = weakref.ref(response)
                del response
                assert ref() is None, path
    finally:
        gc.enable()
