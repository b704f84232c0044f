"""A tiny real OAuth token endpoint and a provider that uses it, for refresh/flow tests.

:class:`TokenEndpoint` is an ASGI app (run it with
:func:`calbridge.sandbox.serve_in_thread`); it counts every token request, so tests can
assert "exactly one token-endpoint call" even when the callers are other processes.
:class:`LoopbackOAuthProvider` implements ``exchange_code`` / ``refresh_tokens`` against
it over HTTP and maps ``invalid_grant`` to ``ReauthRequired`` and ``invalid_client`` to
``ConfigurationError`` like the real provider plugins.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import attrs
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from calbridge.errors import ConfigurationError, ProviderResponseError, ReauthRequired
from calbridge.hookspecs import hookimpl
from calbridge.models import Account, AccountStatus, Calendar, Secret, TokenSet
from calbridge.provider import (
    AuthorizationRequest,
    Capabilities,
    Provider,
    Session,
    TokenGrant,
)

from ._flow import pkce_challenge

__all__ = ["LoopbackOAuthProvider", "OtherLoopbackProvider", "StatusHookRecorder", "TokenEndpoint"]


@attrs.define
class TokenEndpoint:
    """An OAuth token endpoint with switches for the failure modes tests need."""

    client_secret: str = attrs.field(factory=lambda: secrets.token_urlsafe(16))
    #: seconds each refresh takes (widens race windows)
    delay: float = 0.0
    #: issue a new refresh token on every refresh and revoke the old one (strict rotation)
    rotate: bool = True
    #: answer refreshes without a refresh_token (Google-like)
    omit_refresh_token: bool = False
    expires_in: int = 3600
    refresh_calls: int = 0
    exchange_calls: int = 0
    #: live refresh token -> user
    refresh_tokens: dict[str, str] = attrs.field(factory=dict)
    #: code -> (user, PKCE challenge)
    codes: dict[str, tuple[str, str | None]] = attrs.field(factory=dict)
    #: every token request's form (secrets included: test-only)
    requests: list[dict[str, str]] = attrs.field(factory=list)

    def issue_code(self, user: str, challenge: str | None) -> str:
        """A code the user would bring back from consent."""
        code = secrets.token_urlsafe(12)
        self.codes[code] = (user, challenge)
        return code

    def grant(self, user: str) -> tuple[str, str]:
        """Mint (access, refresh) tokens for ``user`` without a code."""
        access, refresh = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        self.refresh_tokens[refresh] = user
        return access, refresh

    def app(self) -> Starlette:
        """The ASGI app: ``POST /token``."""
        return Starlette(routes=[Route("/token", self._token, methods=["POST"])])

    async def _token(self, request: Request) -> JSONResponse:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        self.requests.append(form)
        if form.get("client_secret") != self.client_secret:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange(form)
        if grant_type == "refresh_token":
            self.refresh_calls += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._refresh(form)
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    def _exchange(self, form: dict[str, str]) -> JSONResponse:
        self.exchange_calls += 1
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        user, challenge = entry
        verifier = form.get("code_verifier")
        if challenge is not None and (verifier is None or pkce_challenge(verifier) != challenge):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access, refresh = self.grant(user)
        return JSONResponse(
            {
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": self.expires_in,
                "user": user,
            }
        )

    def _refresh(self, form: dict[str, str]) -> JSONResponse:
        old = form.get("refresh_token", "")
        user = self.refresh_tokens.get(old)
        if user is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        body: dict[str, Any] = {
            "access_token": secrets.token_urlsafe(12),
            "expires_in": self.expires_in,
        }
        if not self.omit_refresh_token:
            if self.rotate:
                del self.refresh_tokens[old]
                new = secrets.token_urlsafe(12)
                self.refresh_tokens[new] = user
                body["refresh_token"] = new
            else:
                body["refresh_token"] = old
        return JSONResponse(body)


class LoopbackOAuthProvider(Provider):
    """A provider whose OAuth calls go to a :class:`TokenEndpoint` at ``base_urls["token"]``."""

    name: ClassVar[str] = "loopback"
    capabilities: ClassVar[Capabilities] = Capabilities(pkce=True, rotating_refresh_tokens=True)
    default_scopes: ClassVar[tuple[str, ...]] = ("calendar",)

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """A consent URL (never visited: tests issue codes at the endpoint directly)."""
        q = httpx.QueryParams(
            {
                "client_id": self.settings.client_id,
                "redirect_uri": request.redirect_uri,
                "state": request.state,
                "scope": " ".join(request.scopes),
                "code_challenge": request.code_challenge or "",
                "code_challenge_method": "S256" if request.code_challenge else "",
            }
        )
        return f"{self.settings.base_urls.get('authorize', 'http://127.0.0.1/authorize')}?{q}"

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        secret = self.settings.client_secret
        form = {
            **form,
            "client_id": self.settings.client_id,
            "client_secret": secret.reveal() if secret else "",
        }
        response = await self.http.post(self.settings.base_urls["token"], data=form)
        body: dict[str, Any] = response.json()
        if response.status_code == 200:
            return body
        error = body.get("error")
        if error == "invalid_client":
            raise ConfigurationError(f"{self.name}: the token endpoint refused the client")
        if error == "invalid_grant":
            raise ReauthRequired("invalid_grant", provider=self.name, status=response.status_code)
        raise ProviderResponseError(
            "token request failed", provider=self.name, status=response.status_code
        )

    def _tokens(self, body: dict[str, Any], previous: TokenSet | None) -> TokenSet:
        refresh = body.get("refresh_token")
        return TokenSet(
            access_token=Secret(body["access_token"]),
            refresh_token=Secret(refresh) if refresh else None,
            expires_at=int(time.time()) + int(body["expires_in"]),
            scope=previous.scope if previous else (),
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """POST grant_type=authorization_code."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        body = await self._post(form)
        return TokenGrant(tokens=self._tokens(body, None), provider_account_id=body["user"])

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """POST grant_type=refresh_token (no refresh token in the answer: the caller keeps it)."""
        if tokens.refresh_token is None:
            raise ReauthRequired("no refresh token", provider=self.name)
        body = await self._post(
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token.reveal()}
        )
        return self._tokens(body, tokens)

    async def list_calendars(self, session: Session) -> list[Calendar]:
        """One calendar (the contract requires the method)."""
        return [Calendar(id="main", provider=self.name, name="Main")]


class OtherLoopbackProvider(LoopbackOAuthProvider):
    """A second authorization server on the same endpoint (for mix-up tests)."""

    name: ClassVar[str] = "other"
    capabilities: ClassVar[Capabilities] = Capabilities(pkce=True)


class StatusHookRecorder:
    """A plugin recording ``account_status_changed`` calls (register it on a PluginHost)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Account, AccountStatus, str]] = []

    @hookimpl
    def account_status_changed(
        self, account: Account, old_status: AccountStatus, reason: str
    ) -> None:
        """Record the call."""
        self.calls.append((account, old_status, reason))
