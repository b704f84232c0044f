"""Cronofy error mapping, the 401 refresh-and-retry, rate limits and the plugin's hooks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from calbridge_cronofy import AccountLocked, CronofyProvider, PaymentRequired
from calbridge_cronofy.testing import FakeCronofy, events_page, ok

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderResponseError,
    RateLimited,
    ReauthRequired,
    Unavailable,
)
from calbridge.testing import fresh_plugin_host


async def test_401_refreshes_once_and_retries(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    def calendars(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer paw":
            return ok(status=401)
        return ok({"calendars": []})

    fake.on("GET", "/v1/calendars", calendars)
    assert await provider.list_calendars(session) == []
    assert [r.headers["authorization"] for r in fake.requests] == ["Bearer paw", "Bearer paw2"]
    assert session.tokens.refreshes == 1  # type: ignore[attr-defined]


async def test_401_twice_needs_reauth(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    fake.on("GET", "/v1/calendars", ok(status=401))
    with pytest.raises(ReauthRequired) as info:
        await provider.list_calendars(session)
    assert len(fake.requests) == 2
    assert "paw" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_request"}, InvalidRequest),
        (402, None, PaymentRequired),
        (403, None, ReauthRequired),
        (404, None, NotFound),
        (
            422,
            {"errors": {"event_id": [{"key": "errors.required", "description": "required"}]}},
            InvalidRequest,
        ),
        (423, None, AccountLocked),
        (429, None, RateLimited),
        (500, None, Unavailable),
        (502, None, Unavailable),
        (503, None, Unavailable),
        (504, None, Unavailable),
        (418, None, ProviderResponseError),
    ],
)
async def test_error_mapping(
    provider: CronofyProvider,
    fake: FakeCronofy,
    session: calbridge.Session,
    status: int,
    body: Any,
    error: type[Exception],
) -> None:
    fake.on("GET", "/v1/calendars", ok(body, status=status) if body else ok(status=status))
    with pytest.raises(error) as info:
        await provider.list_calendars(session)
    assert "paw" not in str(info.value)
    if status == 422:
        assert isinstance(info.value, InvalidRequest)
        assert info.value.field_errors == {"event_id": ("required (errors.required)",)}
    if status == 402:
        assert isinstance(info.value, NotSupported)


async def test_429_with_long_retry_after_carries_it(
    make_provider: Callable[..., CronofyProvider],
    fake: FakeCronofy,
    session: calbridge.Session,
) -> None:
    provider = make_provider(retry=calbridge.RetryPolicy(attempts=3, max_wait=1.0))
    fake.on("GET", "/v1/calendars", ok(status=429, headers={"Retry-After": "120"}))
    with pytest.raises(RateLimited) as info:
        await provider.list_calendars(session)
    assert info.value.retry_after == 120


async def test_non_json_answer(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    fake.on("GET", "/v1/calendars", httpx.Response(200, text="<html>"))
    with pytest.raises(ProviderResponseError):
        await provider.list_calendars(session)
    fake.on("GET", "/v1/events", ok({"pages": {}, "events": [{"calendar_id": "c"}]}))
    window = calbridge.TimeRange(
        start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    )
    with pytest.raises(ProviderResponseError):
        async for _ in provider.list_events(session, "c", window):
            pass


async def test_rate_limiters_pace_every_call(
    make_provider: Callable[..., CronofyProvider],
    fake: FakeCronofy,
    session: calbridge.Session,
) -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiters = [
        calbridge.RateLimiter(limit=2, period=1.0, clock=lambda: now[0], sleep=sleep),
        calbridge.RateLimiter(limit=3, period=60.0, clock=lambda: now[0], sleep=sleep),
    ]
    provider = make_provider(rate_limiters=limiters)
    fake.on("GET", "/v1/events", ok(events_page([], None)))
    fake.on("GET", "/v1/calendars", ok({"calendars": []}))
    for _ in range(4):
        await provider.list_calendars(session)
    assert waits == [1.0, 59.0]


def test_default_limiters_are_cronofys() -> None:
    provider = CronofyProvider(http=httpx.AsyncClient(), settings=calbridge.ProviderSettings())
    limits = sorted((lim.limit, round(lim.period, 6)) for lim in provider._limiters)
    assert limits == [(50, 1.05), (500, 63.0)]
    off = CronofyProvider(
        http=httpx.AsyncClient(),
        settings=calbridge.ProviderSettings(
            options={"rate_limit_per_second": 0, "rate_limit_per_minute": 0}
        ),
    )
    assert off._limiters == []


def test_hooks_register_and_choose_push() -> None:
    host = fresh_plugin_host()
    assert host.provider_class("cronofy") is CronofyProvider
    provider = CronofyProvider(http=httpx.AsyncClient(), settings=calbridge.ProviderSettings())
    assert host.make_change_source(provider, "https://app.example/hook").kind == "push"
    assert host.make_change_source(provider, None).kind == "poll"
    assert CronofyProvider.capabilities.push
    assert not CronofyProvider.capabilities.pkce
