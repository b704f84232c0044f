"""K1: secrets never reach logs (DEBUG everywhere), reprs, exception text or public JSON."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, urlsplit

import pytest

import calbridge
from calbridge.auth import OAuthFlow, ProviderPaused, StoreTokenSource
from calbridge.auth.testing import LoopbackOAuthProvider, TokenEndpoint
from calbridge.errors import ReauthRequired
from calbridge.models import TokenSet
from calbridge.store import Store


async def test_no_secret_in_logs_reprs_or_errors(
    store: Store,
    provider: LoopbackOAuthProvider,
    endpoint: TokenEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "authlib", "calbridge", "sqlalchemy.engine"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    shown: list[str] = []  # everything a person or a log could see

    flow = OAuthFlow(store, {"loopback": provider}, redirect_base="https://app.test/cb")
    start = await flow.begin(app_user_id="u1", provider="loopback")
    shown.append(repr(start))
    q = {k: v[0] for k, v in parse_qs(urlsplit(start.url).query).items()}
    code = endpoint.issue_code("r1", q["code_challenge"])
    account = await flow.complete("loopback", {"code": code, "state": q["state"]})
    assert account.id is not None
    first = store.credentials.get_tokens(account.id)
    assert first is not None
    shown += [repr(account), repr(first), repr(first.tokens)]
    shown.append(str(calbridge.make_converter().unstructure(first)))

    # a refresh (expire the token first)
    store.credentials.save_tokens(
        account.id,
        TokenSet(
            access_token=first.tokens.access_token,
            refresh_token=first.tokens.refresh_token,
            expires_at=int(time.time()) - 5,
        ),
    )
    source = StoreTokenSource(store, provider, account.id)
    second = await source.get()
    shown += [repr(source), repr(second)]

    # failures: invalid_grant, then invalid_client
    store.credentials.save_tokens(
        account.id,
        TokenSet(
            access_token=second.access_token,
            refresh_token="revoked-rt-canary-81f2",
            expires_at=int(time.time()) - 5,
        ),
    )
    with pytest.raises(ReauthRequired) as reauth:
        await source.get()
    shown += [str(reauth.value), repr(reauth.value)]
    other = store.accounts.upsert_account(
        app_user_id="u2", provider="loopback", provider_account_id="r2"
    )
    assert other.id is not None
    at2, rt2 = endpoint.grant("r2")
    store.credentials.save_tokens(
        other.id, TokenSet(access_token=at2, refresh_token=rt2, expires_at=1)
    )
    real_secret = endpoint.client_secret
    endpoint.client_secret = "changed-by-an-operator"
    with pytest.raises(ProviderPaused) as paused:
        await StoreTokenSource(store, provider, other.id).get()
    shown += [str(paused.value), repr(paused.value)]

    secrets_used = {
        first.tokens.access_token.reveal(),
        second.access_token.reveal(),
        "revoked-rt-canary-81f2",
        at2,
        rt2,
        real_secret,
    }
    assert first.tokens.refresh_token is not None
    secrets_used.add(first.tokens.refresh_token.reveal())
    assert second.refresh_token is not None
    secrets_used.add(second.refresh_token.reveal())
    secrets_used |= {r["code_verifier"] for r in endpoint.requests if "code_verifier" in r}
    assert len(secrets_used) >= 8
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in logged  # DEBUG/INFO logging really was on
    for secret in secrets_used:
        assert secret not in logged
        for text in shown:
            assert secret not in text
