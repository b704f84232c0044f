"""calbridge.toolkit.OAuthClient against scripted token endpoints (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from calbridge import AuthorizationRequest, RetryPolicy, Secret, TokenSet
from calbridge.errors import (
    CalbridgeError,
    ConfigurationError,
    InvalidRequest,
    NotSupported,
    ProviderError,
    ProviderResponseError,
    ReauthRequired,
    Unavailable,
)
from calbridge.toolkit import (
    AuthorizedClient,
    OAuthClient,
    TokenErrors,
    oauth_error_code,
    pkce_challenge,
    read_token_set,
)


class Endpoint:
    """A token endpoint answering in turn, recording every request."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0)

    def form(self, i: int = -1) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.requests[i].content.decode()).items()}


def _errors(response: httpx.Response, *, what: str) -> CalbridgeError:
    return ProviderError(what, provider="example", status=response.status_code)


def oauth(endpoint: Callable[[httpx.Request], httpx.Response], **kw: Any) -> OAuthClient:
    api = AuthorizedClient(
        http=httpx.AsyncClient(transport=httpx.MockTransport(endpoint)),
        provider="example",
        errors=_errors,
        policy=RetryPolicy(attempts=1),
    )
    kw.setdefault("client_secret", Secret("shh"))
    return OAuthClient(
        client=api,
        client_id="cid",
        authorize_url="https://login.test/authorize",
        token_url="https://login.test/token",
        errors=TokenErrors(provider="example", issuer="Example"),
        clock=lambda: 1000.0,
        **kw,
    )


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_pkce_challenge_follows_rfc_7636() -> None:
    """Appendix B's vector for S256; plain is the verifier itself."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce_challenge(verifier, "plain") == verifier


def test_authorization_url_with_pkce_scopes_and_extras() -> None:
    client = oauth(Endpoint(), required_scopes=("offline_access",), pkce_methods=("S256", "plain"))
    request = AuthorizationRequest(
        redirect_uri="https://app/cb",
        state="st",
        code_challenge="chal",
        login_hint="a@b",
        extra={"prompt": "none"},
    )
    q = _query(client.authorization_url(request, scopes=("cal",), params={"mode": "query"}))
    assert q == {
        "response_type": "code",
        "client_id": "cid",
        "redirect_uri": "https://app/cb",
        "scope": "cal offline_access",
        "state": "st",
        "mode": "query",
        "code_challenge": "chal",
        "code_challenge_method": "S256",
        "login_hint": "a@b",
        "prompt": "none",
    }
    plain = client.authorization_url(request, scopes=(), pkce_method="plain")
    assert _query(plain)["code_challenge_method"] == "plain"
    other = client.authorization_url(request, scopes=(), url="https://login.test/admin")
    assert other.startswith("https://login.test/admin?")


def test_authorization_url_refusals() -> None:
    request = AuthorizationRequest(redirect_uri="https://app/cb", state="st", code_challenge="c")
    with pytest.raises(ConfigurationError, match="PKCE S256, not plain"):
        oauth(Endpoint()).authorization_url(request, scopes=(), pkce_method="plain")
    without = oauth(Endpoint(), pkce_methods=())
    assert "code_challenge" not in _query(without.authorization_url(request, scopes=("a",)))
    nobody = oauth(Endpoint())
    nobody.client_id = ""
    with pytest.raises(ConfigurationError, match=r"settings\.client_id"):
        nobody.authorization_url(request, scopes=())


async def test_exchange_posts_a_form_and_reads_the_answer() -> None:
    endpoint = Endpoint(
        httpx.Response(
            200,
            json={
                "access_token": "A1",
                "refresh_token": "R1",
                "expires_in": 3600,
                "scope": "a b",
                "token_type": "Bearer",
                "id_token": "x.y.z",
            },
        )
    )
    answer = await oauth(endpoint).exchange(
        code="c0de", redirect_uri="https://app/cb", code_verifier="v", params={"scope": "a b"}
    )
    assert endpoint.form() == {
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": "https://app/cb",
        "code_verifier": "v",
        "scope": "a b",
        "client_id": "cid",
        "client_secret": "shh",
    }
    assert endpoint.requests[0].headers["accept"] == "application/json"
    tokens = answer.tokens
    assert tokens.access_token.reveal() == "A1"
    assert tokens.refresh_token is not None
    assert tokens.refresh_token.reveal() == "R1"
    assert (tokens.expires_at, tokens.scope) == (4600, ("a", "b"))
    assert answer.body["id_token"] == "x.y.z"
    assert "A1" not in repr(answer)


async def test_json_bodies_no_verifier_without_pkce_and_a_required_secret() -> None:
    endpoint = Endpoint(httpx.Response(200, json={"access_token": "A1"}))
    client = oauth(endpoint, body="json", pkce_methods=(), secret_required=True)
    await client.exchange(code="c", redirect_uri="https://app/cb", code_verifier="v")
    assert json.loads(endpoint.requests[0].content) == {
        "grant_type": "authorization_code",
        "code": "c",
        "redirect_uri": "https://app/cb",
        "client_id": "cid",
        "client_secret": "shh",
    }
    secretless = oauth(Endpoint(), secret_required=True, client_secret=None)
    with pytest.raises(ConfigurationError, match=r"settings\.client_secret"):
        await secretless.exchange(code="c", redirect_uri="https://app/cb")


async def test_refresh_keeps_or_replaces_the_refresh_token() -> None:
    old = TokenSet(access_token="A0", refresh_token="R0", scope=("a",), extra={"sub": "1"})
    endpoint = Endpoint(
        httpx.Response(200, json={"access_token": "A1", "expires_in": "60"}),
        httpx.Response(200, json={"access_token": "A2", "refresh_token": "R2"}),
    )
    client = oauth(endpoint)
    kept = await client.refresh(old)
    assert endpoint.form()["refresh_token"] == "R0"
    assert kept.refresh_token is not None
    assert kept.refresh_token.reveal() == "R0"
    assert (kept.scope, kept.extra, kept.expires_at) == (("a",), {"sub": "1"}, 1060)
    rotated = await client.refresh(kept, params={"scope": "a"})
    assert endpoint.form()["scope"] == "a"
    assert rotated.refresh_token is not None
    assert rotated.refresh_token.reveal() == "R2"
    with pytest.raises(ReauthRequired, match="no refresh token"):
        await client.refresh(TokenSet(access_token="A"))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_grant"}, ReauthRequired),
        (401, {"error": "invalid_client"}, ConfigurationError),
        (400, {"error": "invalid_scope"}, InvalidRequest),
        (400, None, InvalidRequest),
        (503, None, Unavailable),
    ],
)
async def test_token_errors(status: int, body: Any, error: type[Exception]) -> None:
    answer = httpx.Response(status, json=body) if body else httpx.Response(status)
    with pytest.raises(error) as info:
        await oauth(Endpoint(answer)).refresh(TokenSet(access_token="A", refresh_token="R-0"))
    assert "R-0" not in str(info.value)


async def test_unreadable_answers() -> None:
    for answer in (
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=["a"]),
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, json={"access_token": "A", "expires_in": "soon"}),
    ):
        with pytest.raises(ProviderResponseError):
            await oauth(Endpoint(answer)).exchange(code="c", redirect_uri="https://app/cb")


async def test_revoke() -> None:
    endpoint = Endpoint(httpx.Response(200), httpx.Response(400), httpx.Response(400))
    client = oauth(
        endpoint, revoke_url="https://login.test/revoke", already_revoked=frozenset({400})
    )
    tokens = TokenSet(access_token="A", refresh_token="R")
    await client.revoke(tokens)
    assert endpoint.form() == {"token": "R"}
    await client.revoke(TokenSet(access_token="A"))  # 400: already revoked
    assert endpoint.form() == {"token": "A"}
    strict = oauth(endpoint, revoke_url="https://login.test/revoke", revoke_with_client=True)
    with pytest.raises(InvalidRequest):
        await strict.revoke(tokens)
    assert endpoint.form()["client_id"] == "cid"
    with pytest.raises(NotSupported):
        await oauth(Endpoint()).revoke(tokens)


def test_helpers() -> None:
    assert oauth_error_code(httpx.Response(400, json={"error": "invalid_grant"})) == "invalid_grant"
    assert oauth_error_code(httpx.Response(400, text="no")) == "unknown"
    tokens = read_token_set({"access_token": "A"}, previous=None, provider="example", now=0)
    assert (tokens.token_type, tokens.expires_at, tokens.refresh_token) == ("Bearer", None, None)
