"""OAuth flows (reliability.md O1-O4): state, PKCE, mix-up defence; no token request on failure."""

from __future__ import annotations

import base64
import hashlib
import string
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import pytest

import calbridge
from calbridge.auth import CALLBACK_HEADERS, OAuthFlow, pkce_challenge
from calbridge.auth.testing import (
    LoopbackOAuthProvider,
    OtherLoopbackProvider,
    StatusHookRecorder,
    TokenEndpoint,
)
from calbridge.errors import InvalidStateError, OAuthError
from calbridge.models import AccountStatus, TokenSet
from calbridge.store import Store

BASE = "https://app.example.com/oauth/callback"


def _flow(store: Store, *providers: LoopbackOAuthProvider, **kw: object) -> OAuthFlow:
    return OAuthFlow(store, {p.name: p for p in providers}, redirect_base=BASE, **kw)  # type: ignore[arg-type]


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _start(
    flow: OAuthFlow, endpoint: TokenEndpoint, provider: str = "loopback", user: str = "u1"
) -> tuple[str, str]:
    start = await flow.begin(app_user_id=user, provider=provider)
    q = _query(start.url)
    code = endpoint.issue_code(f"remote-{user}", q["code_challenge"])
    return q["state"], code


def test_pkce_challenge_is_s256_without_padding() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    digest = hashlib.sha256(verifier.encode()).digest()
    assert pkce_challenge(verifier) == base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def test_connect_happy_path(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider)
    start = await flow.begin(app_user_id="u1", provider="loopback")
    q = _query(start.url)
    assert start.redirect_uri == q["redirect_uri"] == f"{BASE}/loopback"
    assert q["code_challenge_method"] == "S256"
    assert "=" not in q["code_challenge"]
    assert q["state"] not in repr(start)
    code = endpoint.issue_code("remote-1", q["code_challenge"])
    account = await flow.complete("loopback", {"code": code, "state": q["state"]})
    assert (account.app_user_id, account.provider, account.provider_account_id) == (
        "u1",
        "loopback",
        "remote-1",
    )
    assert endpoint.exchange_calls == 1
    sent = endpoint.requests[-1]
    # the token request carries the verifier whose S256 is the challenge of the URL
    verifier = sent["code_verifier"]
    assert 43 <= len(verifier) <= 128
    assert (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        == q["code_challenge"]
    )
    assert sent["redirect_uri"] == f"{BASE}/loopback"
    assert account.id is not None
    stored = store.credentials.get_tokens(account.id)
    assert stored is not None
    assert stored.tokens.refresh_token is not None
    assert [e.action for e in store.audit_log.audit_entries(app_user_id="u1")] == ["connected"]
    assert CALLBACK_HEADERS["Referrer-Policy"] == "no-referrer"


async def test_verifier_is_unique_per_attempt(
    store: Store, provider: LoopbackOAuthProvider
) -> None:
    flow = _flow(store, provider)
    seen = {
        _query((await flow.begin(app_user_id="u1", provider="loopback")).url)["code_challenge"]
        for _ in range(5)
    }
    assert len(seen) == 5


def test_pkce_and_state_need_no_oauth_library() -> None:
    """PKCE is computed with the standard library: importing the flows loads no Authlib."""
    code = (
        "import sys, calbridge.auth, calbridge.auth._web;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'authlib'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


async def test_verifier_is_64_unreserved_characters(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider)
    q = _query((await flow.begin(app_user_id="u1", provider="loopback")).url)
    code = endpoint.issue_code("remote-v", q["code_challenge"])
    await flow.complete("loopback", {"code": code, "state": q["state"]})
    verifier = endpoint.requests[-1]["code_verifier"]
    assert len(verifier) == 64
    assert set(verifier) <= set(string.ascii_letters + string.digits + "-._~")
    assert pkce_challenge(verifier) == q["code_challenge"]


@pytest.mark.parametrize(
    "params",
    [{}, {"state": ""}, {"state": "forged-state-value"}, {"code": "x"}],
    ids=["missing", "empty", "unknown", "code-without-state"],
)
async def test_bad_state_never_reaches_token_endpoint(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint, params: dict[str, str]
) -> None:
    flow = _flow(store, provider)
    _state, code = await _start(flow, endpoint)
    with pytest.raises(InvalidStateError):
        await flow.complete("loopback", {"code": code, **params} if "state" in params else params)
    assert endpoint.requests == []


async def test_reused_state_is_rejected(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider)
    state, code = await _start(flow, endpoint)
    await flow.complete("loopback", {"code": code, "state": state})
    code2 = endpoint.issue_code("remote-u1", None)
    with pytest.raises(InvalidStateError, match="already used"):
        await flow.complete("loopback", {"code": code2, "state": state})
    assert endpoint.exchange_calls == 1


async def test_expired_state_is_rejected(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    now = [time.time()]
    store.clock = lambda: now[0]
    flow = _flow(store, provider, clock=lambda: now[0], state_ttl=60)
    state, code = await _start(flow, endpoint)
    now[0] += 61
    with pytest.raises(InvalidStateError):
        await flow.complete("loopback", {"code": code, "state": state})
    assert endpoint.requests == []


async def test_code_delivered_to_another_providers_callback(
    store: Store,
    provider: LoopbackOAuthProvider,
    other_provider: OtherLoopbackProvider,
    endpoint: TokenEndpoint,
) -> None:
    flow = _flow(store, provider, other_provider)
    state, code = await _start(flow, endpoint, provider="loopback")
    with pytest.raises(InvalidStateError, match="mix-up"):
        await flow.complete("other", {"code": code, "state": state})
    assert endpoint.requests == []
    # the state is spent: it cannot be replayed at the right callback either
    with pytest.raises(InvalidStateError):
        await flow.complete("loopback", {"code": code, "state": state})
    assert endpoint.requests == []


@pytest.mark.parametrize("iss", ["https://evil.example", "", "https://accounts.google.com"])
async def test_wrong_or_unknown_issuer_is_rejected(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint, iss: str
) -> None:
    flow = _flow(store, provider, issuers={"loopback": "https://as.loopback.test"})
    state, code = await _start(flow, endpoint)
    with pytest.raises(InvalidStateError, match="issuer"):
        await flow.complete("loopback", {"code": code, "state": state, "iss": iss})
    assert endpoint.requests == []


async def test_matching_issuer_is_accepted(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider, issuers={"loopback": "https://as.loopback.test"})
    state, code = await _start(flow, endpoint)
    await flow.complete(
        "loopback", {"code": code, "state": state, "iss": "https://as.loopback.test"}
    )
    assert endpoint.exchange_calls == 1


async def test_declined_consent(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider)
    state, _code = await _start(flow, endpoint)
    with pytest.raises(OAuthError, match="access_denied") as info:
        await flow.complete("loopback", {"state": state, "error": "access_denied"})
    assert not isinstance(info.value, InvalidStateError)
    with pytest.raises(OAuthError):
        await flow.complete("loopback", {"state": state, "code": "x"})  # spent
    assert endpoint.requests == []


async def test_reconnect_reactivates_and_notifies(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    hooks: tuple[calbridge.PluginHost, StatusHookRecorder],
) -> None:
    host, recorder = hooks
    flow = _flow(store, provider, notify=host.notify_account_status_changed)
    state, code = await _start(flow, endpoint)
    first = await flow.complete("loopback", {"code": code, "state": state})
    assert first.id is not None
    store.accounts.set_account_status(first.id, AccountStatus.NEEDS_REAUTH)
    state, code = await _start(flow, endpoint)
    again = await flow.complete("loopback", {"code": code, "state": state})
    assert again.id == first.id
    assert again.status is AccountStatus.ACTIVE
    assert [(c[1], c[2]) for c in recorder.calls] == [(AccountStatus.NEEDS_REAUTH, "reconnected")]
    stored = store.credentials.get_tokens(first.id)
    assert stored is not None
    assert isinstance(stored.tokens, TokenSet)


def test_redirect_base_must_be_https(store: Store) -> None:
    with pytest.raises(OAuthError):
        OAuthFlow(store, {}, redirect_base="http://app.example.com/cb")


async def test_state_of_another_app_user_is_rejected(
    store: Store, provider: LoopbackOAuthProvider, endpoint: TokenEndpoint
) -> None:
    flow = _flow(store, provider)
    state, code = await _start(flow, endpoint, user="attacker")
    with pytest.raises(InvalidStateError, match="another user"):
        await flow.complete("loopback", {"code": code, "state": state}, app_user_id="victim")
    assert endpoint.requests == []
    state, code = await _start(flow, endpoint, user="victim")
    account = await flow.complete("loopback", {"code": code, "state": state}, app_user_id="victim")
    assert account.app_user_id == "victim"
