"""Fixtures for the Cronofy plugin's unit tests (helpers live in ``cronofy_fakes``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from calbridge_cronofy import CronofyProvider
from calbridge_cronofy.testing import CLIENT_SECRET, FakeCronofy

import calbridge


@pytest.fixture
def fake() -> FakeCronofy:
    return FakeCronofy()


@pytest.fixture
def make_provider(fake: FakeCronofy) -> Callable[..., CronofyProvider]:
    def make(**options: Any) -> CronofyProvider:
        options.setdefault("data_center", "uk")
        options.setdefault("rate_limiters", ())
        options.setdefault("retry", calbridge.RetryPolicy(attempts=1))
        settings = calbridge.ProviderSettings(
            client_id="cats", client_secret=CLIENT_SECRET, options=options
        )
        return CronofyProvider(
            http=httpx.AsyncClient(transport=httpx.MockTransport(fake)), settings=settings
        )

    return make


@pytest.fixture
def provider(make_provider: Callable[..., CronofyProvider]) -> CronofyProvider:
    return make_provider()


@pytest.fixture
def session() -> calbridge.Session:
    tokens = calbridge.TokenSet(access_token="paw", refresh_token="teeth", expires_at=None)

    async def refresher(stale: calbridge.TokenSet) -> calbridge.TokenSet:
        return calbridge.TokenSet(access_token="paw2", refresh_token="teeth")

    return calbridge.Session(
        account=calbridge.Account(
            app_user_id="u1", provider="cronofy", provider_account_id="acc_1", id="a-1"
        ),
        tokens=calbridge.StaticTokenSource(tokens=tokens, refresher=refresher),
    )
