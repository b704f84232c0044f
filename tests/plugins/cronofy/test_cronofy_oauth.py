"""Cronofy hosts, Individual Connect and Enterprise Connect (MockTransport)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

import httpx
import pytest
from calbridge_cronofy import DATA_CENTERS, CronofyProvider, ServiceAccountAuthorization
from calbridge_cronofy.testing import API, APP, CLIENT_SECRET, FakeCronofy, ok, token_answer

import calbridge
from calbridge.errors import ConfigurationError, ReauthRequired


def _provider(**kw: object) -> CronofyProvider:
    return CronofyProvider(http=httpx.AsyncClient(), settings=calbridge.ProviderSettings(**kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dc", "api", "app"),
    [
        (None, "https://api.cronofy.com", "https://app.cronofy.com"),
        ("us", "https://api.cronofy.com", "https://app.cronofy.com"),
        ("uk", "https://api-uk.cronofy.com", "https://app-uk.cronofy.com"),
        ("de", "https://api-de.cronofy.com", "https://app-de.cronofy.com"),
        ("au", "https://api-au.cronofy.com", "https://app-au.cronofy.com"),
        ("ca", "https://api-ca.cronofy.com", "https://app-ca.cronofy.com"),
        ("sg", "https://api-sg.cronofy.com", "https://app-sg.cronofy.com"),
    ],
)
def test_data_centres(dc: str | None, api: str, app: str) -> None:
    p = _provider(options={"data_center": dc} if dc else {})
    assert (p.hosts.api, p.hosts.app) == (api, app)
    assert set(DATA_CENTERS) == {"us", "uk", "de", "au", "ca", "sg"}


def test_base_urls_override_and_unknown_data_centre() -> None:
    p = _provider(base_urls={"api": "http://127.0.0.1:9/cronofy/", "app": "http://h/app"})
    assert (p.hosts.api, p.hosts.app) == ("http://127.0.0.1:9/cronofy", "http://h/app")
    one = _provider(base_urls={"api": "http://127.0.0.1:9/cronofy"})
    assert one.hosts.app == one.hosts.api == "http://127.0.0.1:9/cronofy"
    assert _provider(options={"data_centre": "de"}).hosts.api == "https://api-de.cronofy.com"
    with pytest.raises(ConfigurationError, match="data centre"):
        _provider(options={"data_center": "mars"})


def test_authorization_url_is_on_the_app_host(provider: CronofyProvider) -> None:
    url = provider.authorization_url(
        calbridge.AuthorizationRequest(
            redirect_uri="https://app.example/cb",
            state="st8",
            extra={"avoid_linking": "true", "provider_name": "google"},
        )
    )
    parsed = urllib.parse.urlsplit(url)
    assert f"{parsed.scheme}://{parsed.netloc}{parsed.path}" == f"{APP}/oauth/authorize"
    q = dict(urllib.parse.parse_qsl(parsed.query))
    assert q["response_type"] == "code"
    assert q["client_id"] == "cats"
    assert q["redirect_uri"] == "https://app.example/cb"
    assert q["state"] == "st8"
    assert q["avoid_linking"] == "true"
    assert q["provider_name"] == "google"
    assert q["scope"].split() == list(provider.default_scopes)
    assert "read_events" in q["scope"].split()
    assert CLIENT_SECRET not in url


async def test_exchange_code_keeps_sub_account_and_linking_profile(
    provider: CronofyProvider, fake: FakeCronofy
) -> None:
    fake.on("POST", "/oauth/token", ok(token_answer()))
    grant = await provider.exchange_code(code="c0de", redirect_uri="https://app.example/cb")
    req = fake.requests[-1]
    assert str(req.url) == f"{API}/oauth/token"
    assert fake.body() == {
        "client_id": "cats",
        "client_secret": CLIENT_SECRET,
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": "https://app.example/cb",
    }
    assert grant.provider_account_id == "acc_5ba21743f408617d1269ea1e"
    assert grant.email == "example@cronofy.com"
    assert grant.details["linking_profile"]["profile_id"] == "pro_n23kjnwrw2"
    t = grant.tokens
    assert t.access_token.reveal() == "P531x88i05Ld2yXHIQ7WjiEyqlmOHsgI"
    assert t.refresh_token is not None
    assert t.refresh_token.reveal() == "3gBYG1XamYDUEXUyybbummQWEe5YqPmf"
    assert t.scope == ("create_event", "delete_event")
    assert t.expires_at is not None
    assert t.extra["sub"] == t.extra["account_id"] == "acc_5ba21743f408617d1269ea1e"
    assert t.extra["linking_profile.provider_name"] == "google"
    assert "P531x88" not in repr(grant)
    assert "3gBYG1" not in repr(grant)


async def test_refresh_keeps_refresh_token_and_extras(
    provider: CronofyProvider, fake: FakeCronofy
) -> None:
    fake.on(
        "POST",
        "/oauth/token",
        ok(
            {
                "token_type": "bearer",
                "access_token": "new",
                "expires_in": 3600,
                "scope": "read_events",
            }
        ),
    )
    old = calbridge.TokenSet(access_token="old", refresh_token="r1", extra={"sub": "acc_1"})
    new = await provider.refresh_tokens(old)
    assert fake.body()["grant_type"] == "refresh_token"
    assert fake.body()["refresh_token"] == "r1"
    assert new.access_token.reveal() == "new"
    assert new.refresh_token is not None
    assert new.refresh_token.reveal() == "r1"
    assert new.extra["sub"] == "acc_1"


async def test_refresh_invalid_grant_needs_reauth(
    provider: CronofyProvider, fake: FakeCronofy
) -> None:
    fake.on("POST", "/oauth/token", ok({"error": "invalid_grant"}, status=400))
    with pytest.raises(ReauthRequired) as info:
        await provider.refresh_tokens(calbridge.TokenSet(access_token="a", refresh_token="r1"))
    assert info.value.status == 400
    assert "r1" not in str(info.value)
    with pytest.raises(ReauthRequired):
        await provider.refresh_tokens(calbridge.TokenSet(access_token="a"))


async def test_revoke_uses_the_refresh_token(provider: CronofyProvider, fake: FakeCronofy) -> None:
    fake.on("POST", "/oauth/token/revoke", ok())
    await provider.revoke_tokens(calbridge.TokenSet(access_token="acc", refresh_token="ref"))
    assert str(fake.requests[-1].url) == f"{API}/oauth/token/revoke"
    assert fake.body() == {"client_id": "cats", "client_secret": CLIENT_SECRET, "token": "ref"}


async def test_enterprise_connect(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    url = provider.enterprise_connect_url(
        calbridge.AuthorizationRequest(redirect_uri="https://app.example/ec", state="s")
    )
    parsed = urllib.parse.urlsplit(url)
    assert parsed.netloc == "app-uk.cronofy.com"
    assert parsed.path == "/enterprise_connect/oauth/authorize"
    q = dict(urllib.parse.parse_qsl(parsed.query))
    assert q["scope"] == "service_account/accounts/manage"
    assert q["delegated_scope"] == "read_write"

    fake.on("POST", "/v1/service_account_authorizations", ok(status=202))
    one = ServiceAccountAuthorization.build(
        email="bob@corp.example",
        callback_url="https://app.example/sa",
        scopes=["read_write"],
        state="b",
    )
    two = ServiceAccountAuthorization.build(
        email="eve@corp.example", callback_url="https://app.example/sa", scopes=["read_only"]
    )
    await provider.authorize_accounts(session, [one])
    assert fake.body() == {
        "email": "bob@corp.example",
        "callback_url": "https://app.example/sa",
        "scope": "read_write",
        "state": "b",
    }
    assert fake.requests[-1].headers["authorization"] == "Bearer paw"
    await provider.authorize_accounts(session, [one, two])
    assert [a["email"] for a in fake.body()["service_account_authorizations"]] == [
        "bob@corp.example",
        "eve@corp.example",
    ]

    fake.on("POST", "/oauth/token", ok(token_answer(sub="acc_bob")))
    grant = await provider.exchange_service_account_code(
        code="cb-code", callback_url="https://app.example/sa"
    )
    assert fake.body()["redirect_uri"] == "https://app.example/sa"
    assert grant.provider_account_id == "acc_bob"


async def test_service_account_token_answer(
    make_provider: Callable[..., CronofyProvider], fake: FakeCronofy
) -> None:
    fake.on(
        "POST",
        "/oauth/token",
        ok(
            {
                "token_type": "bearer",
                "access_token": "sa",
                "expires_in": 1800,
                "refresh_token": "sar",
                "scope": "service_account/accounts/manage",
                "service_account_id": "ser_5ba21743f408617d1269ea1e",
            }
        ),
    )
    grant = await make_provider().exchange_code(code="c", redirect_uri="https://x")
    assert grant.provider_account_id == "ser_5ba21743f408617d1269ea1e"
    assert grant.tokens.extra["service_account_id"] == "ser_5ba21743f408617d1269ea1e"
