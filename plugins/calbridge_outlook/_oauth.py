"""Microsoft identity platform v2 on calbridge's OAuth client.

* ``{login}/{tenant}/oauth2/v2.0/authorize`` and ``/token``; ``tenant`` defaults to
  ``common`` (work, school and personal accounts).
* ``offline_access`` is always requested (without it there is no refresh token), with
  PKCE (``S256``, or ``plain``), ``response_mode=query`` and the caller's ``state``.
* Refresh tokens rotate: every refresh answer carries a new one, which replaces the old
  one (never reused), so neither a code exchange nor a refresh is ever repeated blindly.
  ``invalid_grant`` (or ``interaction_required``, ``consent_required``) means the grant is
  gone: re-authorise.
* The platform has no token revocation endpoint for delegated tokens; revoking is a local
  forget unless ``revoke_sign_in_sessions`` is set (see the provider).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from calbridge import ProviderSettings
from calbridge.toolkit import AuthorizedClient, OAuthClient

from ._errors import TOKEN_ERRORS

__all__ = ["AUTHORIZATION_PARAMS", "OFFLINE_ACCESS", "make_oauth"]

OFFLINE_ACCESS = "offline_access"
#: what every consent URL asks for besides the usual
AUTHORIZATION_PARAMS: Mapping[str, str] = {"response_mode": "query"}


def make_oauth(
    api: AuthorizedClient,
    settings: ProviderSettings,
    *,
    login: str,
    tenant: str,
    clock: Callable[[], float],
) -> OAuthClient:
    """The identity platform's OAuth client for ``tenant`` at ``{login}``."""
    return OAuthClient(
        client=api,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        authorize_url=f"{login}/{tenant}/oauth2/v2.0/authorize",
        token_url=f"{login}/{tenant}/oauth2/v2.0/token",
        errors=TOKEN_ERRORS,
        pkce_methods=("S256", "plain"),
        required_scopes=(OFFLINE_ACCESS,),
        clock=clock,
    )
