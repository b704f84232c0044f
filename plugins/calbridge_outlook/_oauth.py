"""Microsoft identity platform v2: authorization URL, code exchange, refresh with rotation.

* ``{login}/{tenant}/oauth2/v2.0/authorize`` and ``/token``; ``tenant`` defaults to
  ``common`` (work, school and personal accounts).
* ``offline_access`` is always requested (without it there is no refresh token), with
  PKCE ``S256`` and the caller's ``state``.
* Refresh tokens rotate: every refresh answer carries a new one, which replaces the old
  one (never reused). ``invalid_grant`` means the grant is gone: re-authorise.
* The platform has no token revocation endpoint for delegated tokens; revoking is a local
  forget unless ``revoke_sign_in_sessions`` is set (see the provider).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode

import httpx

from calbridge import AuthorizationRequest, Secret, TokenSet, read_json
from calbridge.errors import (
    ConfigurationError,
    InvalidRequest,
    ReauthRequired,
    Unavailable,
)

from ._http import GraphHttp
from ._wire import TokenResponse, parse

__all__ = ["OFFLINE_ACCESS", "GraphOAuth"]

PROVIDER = "outlook"
OFFLINE_ACCESS = "offline_access"


class GraphOAuth:
    """The OAuth half of the Outlook provider."""

    def __init__(
        self,
        http: GraphHttp,
        *,
        client_id: str,
        client_secret: Secret | None,
        login_base: str,
        tenant: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.client_id = client_id
        self.client_secret = client_secret
        self.authorize_url = f"{login_base}/{tenant}/oauth2/v2.0/authorize"
        self.token_url = f"{login_base}/{tenant}/oauth2/v2.0/token"
        self.clock = clock

    @staticmethod
    def scopes(requested: tuple[str, ...], default: tuple[str, ...]) -> str:
        """The scope string, always with ``offline_access``."""
        scopes = list(requested or default)
        if OFFLINE_ACCESS not in scopes:
            scopes.append(OFFLINE_ACCESS)
        return " ".join(scopes)

    def authorization_url(self, request: AuthorizationRequest, default: tuple[str, ...]) -> str:
        """The consent URL: code flow, query response mode, PKCE S256, state."""
        if not self.client_id:
            raise ConfigurationError("the outlook provider needs settings.client_id")
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": request.redirect_uri,
            "response_mode": "query",
            "scope": self.scopes(request.scopes, default),
            "state": request.state,
        }
        if request.code_challenge:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        if request.login_hint:
            params["login_hint"] = request.login_hint
        params.update(request.extra)
        return f"{self.authorize_url}?{urlencode(params)}"

    async def _token(self, form: dict[str, str]) -> httpx.Response:
        form["client_id"] = self.client_id
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret.reveal()
        request = self.http.client.build_request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )
        # a code or a rotating refresh token is single-use: never repeat the POST blindly
        return await self.http.send(request, idempotent=False)

    def _tokens(self, response: httpx.Response, previous: TokenSet | None) -> TokenSet:
        body = read_json(response, provider=PROVIDER, what="the token endpoint")
        data = parse(body, TokenResponse)
        refresh = Secret(data.refresh_token) if data.refresh_token else None
        if refresh is None and previous is not None:
            refresh = previous.refresh_token
        return TokenSet(
            access_token=Secret(data.access_token),
            refresh_token=refresh,
            expires_at=int(self.clock()) + int(data.expires_in) if data.expires_in else None,
            scope=tuple(data.scope.split()) if data.scope else (previous.scope if previous else ()),
            token_type=data.token_type or "Bearer",
            extra=dict(previous.extra) if previous is not None else {},
        )

    @staticmethod
    def _failure(response: httpx.Response, *, action: str) -> Exception:
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = body.get("error") if isinstance(body, dict) else None
        code = code if isinstance(code, str) else "unknown"
        if response.status_code >= 500:
            return Unavailable(f"{action} failed", provider=PROVIDER, status=response.status_code)
        if code in ("invalid_client", "unauthorized_client"):
            return ConfigurationError(
                f"Microsoft refused the client credentials ({code}); check the outlook "
                "provider settings"
            )
        if code in ("invalid_grant", "interaction_required", "consent_required"):
            return ReauthRequired(
                f"{action} was refused ({code})", provider=PROVIDER, status=response.status_code
            )
        return InvalidRequest(
            f"{action} was refused ({code})", provider=PROVIDER, status=response.status_code
        )

    async def exchange(
        self, *, code: str, redirect_uri: str, code_verifier: str | None, scope: str
    ) -> TokenSet:
        """Trade an authorization code for tokens."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "scope": scope,
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        response = await self._token(form)
        if response.status_code != 200:
            raise self._failure(response, action="code exchange")
        return self._tokens(response, None)

    async def refresh(self, tokens: TokenSet, scope: str) -> TokenSet:
        """New tokens; the rotated refresh token replaces the old one."""
        if tokens.refresh_token is None:
            raise ReauthRequired("there is no refresh token to refresh with", provider=PROVIDER)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token.reveal(),
            "scope": scope,
        }
        response = await self._token(form)
        if response.status_code != 200:
            raise self._failure(response, action="refresh")
        return self._tokens(response, tokens)
