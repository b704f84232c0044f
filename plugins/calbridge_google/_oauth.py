"""Google OAuth 2.0 on calbridge's OAuth client, and who the tokens belong to.

* The authorization URL asks for offline access (a refresh token) with ``prompt=consent``
  (Google sends a refresh token again only with it), PKCE (``S256``, or ``plain``) and
  the caller's state.
* A refresh response normally has no ``refresh_token``: the stored one is kept.
* ``invalid_grant`` means the grant is gone (revoked, expired, password change):
  :class:`calbridge.errors.ReauthRequired`. Revoking a token already revoked (400)
  counts as done.
* Who the account is comes from the ``id_token`` the token endpoint returns for the
  ``openid email`` scopes (read without signature check: it came straight from Google's
  token endpoint over TLS, as OpenID Connect Core 3.1.3.7 allows), else from the primary
  calendar, whose id is the account's address.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from calbridge import ProviderSettings, TokenGrant, TokenSet
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import AuthorizedClient, OAuthClient

from ._errors import TOKEN_ERRORS

__all__ = ["AUTHORIZATION_PARAMS", "claims_of", "decode_id_token", "grant", "make_oauth"]

PROVIDER = "google"
#: what every consent URL asks for besides the usual
AUTHORIZATION_PARAMS: Mapping[str, str] = {
    "access_type": "offline",
    "prompt": "consent",
    "include_granted_scopes": "true",
}


def make_oauth(
    api: AuthorizedClient,
    settings: ProviderSettings,
    *,
    accounts: str,
    oauth2: str,
    clock: Callable[[], float],
) -> OAuthClient:
    """Google's OAuth client: consent at ``{accounts}``, tokens at ``{oauth2}``."""
    return OAuthClient(
        client=api,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        authorize_url=f"{accounts}/o/oauth2/v2/auth",
        token_url=f"{oauth2}/token",
        revoke_url=f"{oauth2}/revoke",
        errors=TOKEN_ERRORS,
        pkce_methods=("S256", "plain"),
        idempotent_refresh=True,  # Google's refresh tokens do not rotate
        idempotent_revoke=True,
        already_revoked=frozenset({400}),  # invalid_token: already revoked or expired
        clock=clock,
    )


def decode_id_token(token: str) -> dict[str, Any]:
    """The claims of an OpenID ``id_token`` (no signature check; see the module doc)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def claims_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``id_token`` claims of a token answer (empty without one)."""
    id_token = body.get("id_token")
    return decode_id_token(id_token) if isinstance(id_token, str) else {}


def grant(tokens: TokenSet, claims: Mapping[str, Any], fallback_email: str | None) -> TokenGrant:
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
