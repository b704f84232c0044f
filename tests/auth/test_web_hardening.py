"""The OAuth callback app: security headers on every answer, no redirect built from Host."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from calbridge.auth import OAuthFlow, oauth_callback_app
from calbridge.auth.testing import LoopbackOAuthProvider, TokenEndpoint
from calbridge.store import Store

EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


def _secure(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.status_code, name)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def _client(flow: OAuthFlow) -> httpx.AsyncClient:
    app = oauth_callback_app(flow.complete, success_path="/connected")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://app.test")


async def test_every_answer_carries_security_headers(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = OAuthFlow(store, {"loopback": provider}, redirect_base="https://app.test/cb")
    start = await flow.begin(app_user_id="u1", provider="loopback")
    q = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    code = endpoint.issue_code("r1", q["code_challenge"])
    async with _client(flow) as client:
        ok = await client.get("/loopback", params={"code": code, "state": q["state"]})
        assert ok.status_code == 303
        _secure(ok)
        answers = [
            (await client.get("/loopback", params={"state": "forged"}), 400),
            (await client.get("/Bad-Name"), 404),
            (await client.get("/a/b/c"), 404),
            (await client.post("/loopback"), 405),
        ]
    for response, status in answers:
        assert response.status_code == status
        _secure(response)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:443"])
async def test_no_redirect_is_built_from_the_host_header(
    store: Store, provider: LoopbackOAuthProvider, host: str
) -> None:
    """Starlette's trailing-slash redirect would send the browser to http://<Host>/..."""
    flow = OAuthFlow(store, {"loopback": provider}, redirect_base="https://app.test/cb")
    async with _client(flow) as client:
        response = await client.get("/loopback/", headers={"host": host})
    assert response.status_code == 404
    assert "location" not in response.headers
    _secure(response)
