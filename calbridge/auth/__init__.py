"""OAuth connections and token refresh for calbridge accounts.

* :class:`OAuthFlow` starts and completes authorization-code flows (RFC 9700: one-time
  state, PKCE S256, per-provider redirect paths, ``iss`` check) and stores the account.
* :class:`StoreTokenSource` is the :class:`calbridge.TokenSource` over the store: single
  flight across coroutines and processes, compare-and-swap persistence, ``needs_reauth``
  and provider pause handling.
* :func:`oauth_callback_app` serves the callbacks over ASGI (no referrer, no open redirect).

See ``docs/security.md``.
"""

from __future__ import annotations

from ._flow import (
    CALLBACK_HEADERS,
    DEFAULT_ISSUERS,
    AuthorizationStart,
    OAuthFlow,
    pkce_challenge,
    state_hash,
)
from ._refresh import ProviderPaused, StoreTokenSource, mark_needs_reauth
from ._web import oauth_callback_app

__all__ = [
    "CALLBACK_HEADERS",
    "DEFAULT_ISSUERS",
    "AuthorizationStart",
    "OAuthFlow",
    "ProviderPaused",
    "StoreTokenSource",
    "mark_needs_reauth",
    "oauth_callback_app",
    "pkce_challenge",
    "state_hash",
]
