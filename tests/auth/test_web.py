"""O4: the callback endpoint sends no referrer and never follows ``next=``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from calbridge.auth import OAuthFlow, oauth_callback_app
from calbridge.auth.testing import LoopbackOAuthProvider, TokenEndpoint
from calbridge.store import Store


async def _client(flow: OAuthFlow) -> httpx.AsyncClient:
    app = oauth_callback_app(flow.complete, success_path="/connected")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://app.test")


async def test_success_redirects_to_fixed_path_only(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = OAuthFlow(store, {"loopback": provider}, redirect_base="https://app.test/cb")
    start = await flow.begin(app_user_id="u1", provider="loopback")
    q = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    code = endpoint.issue_code("r1", q["code_challenge"])
    async with await _client(flow) as client:
        response = await client.get(
            "/loopback",
            params={"code": code, "state": q["state"], "next": "https://evil.example/x"},
        )
    assert response.status_code == 303
    assert response.headers["location"] == "/connected"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert endpoint.exchange_calls == 1


@pytest.mark.parametrize("query", [{}, {"state": "forged", "code": "c"}, {"error": "x"}])
async def test_refused_callbacks(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    query: dict[str, str],
) -> None:
    flow = OAuthFlow(store, {"loopback": provider}, redirect_base="https://app.test/cb")
    async with await _client(flow) as client:
        response = await client.get("/loopback", params={**query, "next": "https://evil.example"})
        bad_name = await client.get("/Not-A-Provider", params=query)
    assert response.status_code == 400
    assert "evil" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "location" not in response.headers
    assert bad_name.status_code == 404
    assert endpoint.requests == []


@pytest.mark.parametrize("path", ["https://evil.example", "//evil.example", "done", "/\\evil"])
def test_success_path_must_be_same_origin(path: str) -> None:
    async def complete(provider: str, params: object) -> object:
        raise AssertionError

    with pytest.raises(ValueError, match="same-origin"):
        oauth_callback_app(complete, success_path=path)  # type: ignore[arg-type]
