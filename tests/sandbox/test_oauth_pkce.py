"""Every provider sandbox honours PKCE the same way (one GrantServer behind all of them).

For Cronofy, Google and Microsoft Graph alike: a code issued with an ``S256`` challenge,
a ``plain`` one, or a challenge without a method (read as ``plain``) is redeemed only with
its verifier; a wrong or missing verifier is refused with ``invalid_grant`` and uses the
code up; an unsupported method is refused at the authorize endpoint; and the tokens a
verified code gives work on the provider's API and refresh.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest

from calbridge.sandbox import World, build_app

CLIENT_ID = "pkce-app"
CLIENT_SECRET = "pkce-secret"
REDIRECT = "https://app.example/cb"
VERIFIER = "v3r1f1er-" + "x" * 40


@attrs.frozen
class Dialect:
    """Where one provider sandbox has its OAuth endpoints and a call proving a token."""

    name: str
    authorize: str
    token: str
    api: str
    email: str
    params: dict[str, str]


DIALECTS = [
    Dialect(
        name="cronofy",
        authorize="/cronofy/oauth/authorize",
        token="/cronofy/oauth/token",
        api="/cronofy/v1/userinfo",
        email="carol@example.com",
        params={"scope": "read_account read_events"},
    ),
    Dialect(
        name="google",
        authorize="/google/o/oauth2/v2/auth",
        token="/google/token",
        api="/google/calendar/v3/users/me/calendarList",
        email="gina@example.com",
        params={
            "scope": "https://www.googleapis.com/auth/calendar",
            "access_type": "offline",
        },
    ),
    Dialect(
        name="graph",
        authorize="/graph/common/oauth2/v2.0/authorize",
        token="/graph/common/oauth2/v2.0/token",
        api="/graph/v1.0/me/calendars",
        email="max@contoso.example",
        params={"scope": "Calendars.ReadWrite offline_access"},
    ),
]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    world = World()
    world.add_application(CLIENT_ID, CLIENT_SECRET)
    app = build_app(world)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as client:
        yield client


async def _authorize(
    http: httpx.AsyncClient, d: Dialect, challenge: str | None, method: str | None
) -> httpx.Response:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "state": "st",
        "login_hint": d.email,
        **d.params,
    }
    if challenge is not None:
        params["code_challenge"] = challenge
    if method is not None:
        params["code_challenge_method"] = method
    return await http.get(d.authorize, params=params)


async def _code(
    http: httpx.AsyncClient, d: Dialect, challenge: str | None, method: str | None
) -> str:
    consent = await _authorize(http, d, challenge, method)
    assert consent.status_code == 302, consent.text
    query = parse_qs(urlsplit(consent.headers["location"]).query)
    assert query["state"] == ["st"]
    return query["code"][0]


async def _exchange(
    http: httpx.AsyncClient, d: Dialect, code: str, verifier: str | None
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return await http.post(d.token, data=form)


def _challenge(method: str | None) -> str:
    return _s256(VERIFIER) if method == "S256" else VERIFIER


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("method", ["S256", "plain", None], ids=["S256", "plain", "no-method"])
async def test_the_right_verifier_redeems_the_code(
    http: httpx.AsyncClient, d: Dialect, method: str | None
) -> None:
    """S256, plain and a method-less (plain) challenge: the verifier redeems the code once."""
    code = await _code(http, d, _challenge(method), method)
    ok = await _exchange(http, d, code, VERIFIER)
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    api = await http.get(d.api, headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert api.status_code == 200, api.text
    again = await _exchange(http, d, code, VERIFIER)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    refreshed = await http.post(
        d.token,
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"] != tokens["access_token"]


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
@pytest.mark.parametrize("method", ["S256", "plain", None], ids=["S256", "plain", "no-method"])
@pytest.mark.parametrize(
    "verifier",
    [VERIFIER + "-wrong", None, _s256(VERIFIER)],
    ids=["wrong", "missing", "the-challenge-itself"],
)
async def test_a_wrong_or_missing_verifier_is_refused(
    http: httpx.AsyncClient, d: Dialect, method: str | None, verifier: str | None
) -> None:
    """A wrong or missing verifier: invalid_grant, and the code is used up."""
    code = await _code(http, d, _challenge(method), method)
    refused = await _exchange(http, d, code, verifier)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    late = await _exchange(http, d, code, VERIFIER)
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
async def test_an_unsupported_method_is_refused_at_authorize(
    http: httpx.AsyncClient, d: Dialect
) -> None:
    """``code_challenge_method=S512``: no code, an ``invalid_request`` answer instead."""
    consent = await _authorize(http, d, _s256(VERIFIER), "S512")
    if consent.status_code == 302:
        query = parse_qs(urlsplit(consent.headers["location"]).query)
        assert "code" not in query
        assert query["error"] == ["invalid_request"]
        assert query["state"] == ["st"]
    else:
        assert consent.status_code == 400
        assert consent.json()["error"] == "invalid_request"


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.name)
async def test_without_a_challenge_no_verifier_is_needed(
    http: httpx.AsyncClient, d: Dialect
) -> None:
    """PKCE stays optional for confidential clients: no challenge, no verifier asked."""
    code = await _code(http, d, None, None)
    ok = await _exchange(http, d, code, None)
    assert ok.status_code == 200, ok.text
