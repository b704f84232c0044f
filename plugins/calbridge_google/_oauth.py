"""Google OAuth 2.0: authorization URL, code exchange, refresh and revoke.

* The authorization URL asks for offline access (a refresh token) with ``prompt=consent``
  (Google sends a refresh token again only with it), PKCE ``S256`` and the caller's state.
* A refresh response normally has no ``refresh_token``: the stored one is kept.
* ``invalid_grant`` on refresh means the grant is gone (revoked, expired, password
  change): :class:`calbridge.errors.ReauthRequired`.
* Who the account is comes from the ``id_token`` the token endpoint returns for the
  ``openid email`` scopes (read without signature check: it came straight from Google's
  token endpoint over TLS, as OpenID Connect Core 3.1.3.7 allows), else from the primary
  calendar, whose id is the account's address.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from calbridge import AuthorizationRequest, Secret, TokenGrant, TokenSet, read_json
from calbridge.errors import (
    ConfigurationError,
    InvalidRequest,
    ProviderResponseError,
    ReauthRequired,
    Unavailable,
)

from ._http import GoogleHttp
from ._wire import TokenResponse, parse

__all__ = ["GoogleOAuth", "decode_id_token"]

PROVIDER = "google"


def decode_id_token(token: str) -> dict[str, Any]:
    """The claims of an OpenID ``id_token`` (no signature check; see the module doc)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class GoogleOAuth:
    """The OAuth half of the Google provider (endpoints from ``base_urls``)."""

    def __init__(
        self,
        http: GoogleHttp,
        *,
        client_id: str,
        client_secret: Secret | None,
        authorize_url: str,
        token_url: str,
        revoke_url: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.client_id = client_id
        self.client_secret = client_secret
        self.authorize_url = authorize_url
        self.token_url = token_url
        self.revoke_url = revoke_url
        self.clock = clock

    def authorization_url(self, request: AuthorizationRequest, scopes: tuple[str, ...]) -> str:
        """The consent URL: offline access, consent prompt, PKCE S256, state."""
        if not self.client_id:
            raise ConfigurationError("the google provider needs settings.client_id")
        params = {
            "client_id": self.client_id,
            "redirect_uri": request.redirect_uri,
            "response_type": "code",
            "scope": " ".join(request.scopes or scopes),
            "state": request.state,
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
        }
        if request.code_challenge:
            params["code_challenge"] = request.code_challenge
            params["code_challenge_method"] = "S256"
        if request.login_hint:
            params["login_hint"] = request.login_hint
        params.update(request.extra)
        return f"{self.authorize_url}?{urlencode(params)}"

    async def _token_request(self, form: dict[str, str], *, idempotent: bool) -> httpx.Response:
        if self.client_secret is not None:
            form["client_secret"] = self.client_secret.reveal()
        form["client_id"] = self.client_id
        request = self.http.client.build_request(
            "POST", self.token_url, data=form, headers={"Accept": "application/json"}
        )
        return await self.http.send(request, idempotent=idempotent)

    def _tokens(self, response: httpx.Response, previous: TokenSet | None) -> TokenSet:
        body = read_json(response, provider=PROVIDER, what="the token endpoint")
        data = parse(body, TokenResponse)
        refresh: Secret | None
        if data.refresh_token:
            refresh = Secret(data.refresh_token)
        else:
            refresh = previous.refresh_token if previous is not None else None
        scope = tuple(data.scope.split()) if data.scope else (previous.scope if previous else ())
        extra = dict(previous.extra) if previous is not None else {}
        return TokenSet(
            access_token=Secret(data.access_token),
            refresh_token=refresh,
            expires_at=int(self.clock()) + int(data.expires_in) if data.expires_in else None,
            scope=scope,
            token_type=data.token_type or "Bearer",
            extra=extra,
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
        if code == "invalid_client":
            return ConfigurationError(
                "Google refused the client_id/client_secret (invalid_client); check the "
                "google provider settings"
            )
        if code == "invalid_grant" and action == "refresh":
            return ReauthRequired(
                "the refresh token was refused (invalid_grant)",
                provider=PROVIDER,
                status=response.status_code,
            )
        return InvalidRequest(
            f"{action} was refused ({code})", provider=PROVIDER, status=response.status_code
        )

    async def exchange(
        self, *, code: str, redirect_uri: str, code_verifier: str | None
    ) -> tuple[TokenSet, dict[str, Any]]:
        """Trade a code for tokens; returns the tokens and the id_token claims (maybe empty)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
        }
        if code_verifier:
            form["code_verifier"] = code_verifier
        response = await self._token_request(form, idempotent=False)
        if response.status_code != 200:
            raise self._failure(response, action="code exchange")
        tokens = self._tokens(response, None)
        claims: dict[str, Any] = {}
        id_token = response.json().get("id_token")
        if isinstance(id_token, str):
            claims = decode_id_token(id_token)
        return tokens, claims

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """A new access token; the stored refresh token stays when none comes back."""
        if tokens.refresh_token is None:
            raise ReauthRequired("there is no refresh token to refresh with", provider=PROVIDER)
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token.reveal()}
        response = await self._token_request(form, idempotent=True)
        if response.status_code != 200:
            raise self._failure(response, action="refresh")
        return self._tokens(response, tokens)

    async def revoke(self, tokens: TokenSet) -> None:
        """Revoke the grant (revoking a refresh token revokes its access tokens too)."""
        token = tokens.refresh_token or tokens.access_token
        request = self.http.client.build_request(
            "POST", self.revoke_url, data={"token": token.reveal()}
        )
        response = await self.http.send(request, idempotent=True)
        if response.status_code == 200:
            return
        if response.status_code == 400:  # invalid_token: already revoked or expired
            return
        raise self._failure(response, action="revoke")


def grant(tokens: TokenSet, claims: dict[str, Any], fallback_email: str | None) -> TokenGrant:
    """The :class:`TokenGrant` for exchanged tokens (the account id is Google's ``sub``)."""
    email = claims.get("email") if isinstance(claims.get("email"), str) else fallback_email
    sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
    account_id = sub or email
    if not account_id:
        raise ProviderResponseError(
            "could not tell which Google account the tokens belong to", provider=PROVIDER
        )
    details = {"sub": sub} if sub else {}
    return TokenGrant(tokens=tokens, provider_account_id=account_id, email=email, details=details)
