"""OAuth authorization-code flows, done safely (RFC 9700).

* ``state``: 256 random bits, stored only as its SHA-256, one-time, bound to the app user,
  the provider, the redirect URI and the PKCE verifier, and expiring (10 minutes).
* PKCE S256 for every provider whose capabilities declare ``pkce`` (the verifier is kept
  encrypted next to the state; the challenge is base64url(SHA-256) without padding).
* Mix-up defence: a distinct redirect path per provider (``<base>/<provider>``), the
  provider bound into the state record, and ``iss`` checked when the callback carries it.
* The callback rejects missing, unknown, reused, expired and foreign state *before* any
  token request (:class:`~calbridge.errors.InvalidStateError`).

Usage::

    flow = OAuthFlow(store, providers, redirect_base="https://app.example.com/oauth/callback")
    start = await flow.begin(app_user_id="u1", provider="google")
    # redirect the browser to start.url; on GET /oauth/callback/google?code=..&state=..:
    account = await flow.complete("google", request.query_params)
    # answer with CALLBACK_HEADERS (Referrer-Policy: no-referrer) and never follow a `next=`
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import attrs

from calbridge.errors import InvalidStateError, OAuthError, ProviderNotFoundError
from calbridge.models import Account, Secret
from calbridge.provider import AuthorizationRequest, Provider, TokenGrant
from calbridge.store import OAuthStateRecord, Store, offload

__all__ = [
    "CALLBACK_HEADERS",
    "DEFAULT_ISSUERS",
    "AuthorizationStart",
    "OAuthFlow",
    "pkce_challenge",
    "state_hash",
]

#: headers the callback response must carry (RFC 9700 §4.2.4: no state in Referer)
CALLBACK_HEADERS: Final[Mapping[str, str]] = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: RFC 9207 issuers of providers known to send ``iss`` in the callback
DEFAULT_ISSUERS: Final[Mapping[str, str]] = {"google": "https://accounts.google.com"}
_PROVIDER_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ERROR_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def state_hash(state: str) -> str:
    """The SHA-256 (hex) under which a state is stored."""
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """S256 challenge: base64url(sha256(verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@attrs.frozen(kw_only=True)
class AuthorizationStart:
    """Where to send the user, and until when the attempt is valid."""

    url: str = attrs.field(repr=False)  # carries the state
    provider: str
    redirect_uri: str
    expires_at: int


class OAuthFlow:
    """Starts and completes OAuth connections and stores the resulting accounts.

    Args:
        store: the state store (with a vault: PKCE verifiers and tokens are encrypted).
        providers: provider instances by name, or a callable returning one by name.
        redirect_base: the public callback URL prefix; provider ``p`` uses ``<base>/p``.
        state_ttl: seconds a started attempt stays valid.
        issuers: provider -> expected ``iss`` (RFC 9207); defaults to :data:`DEFAULT_ISSUERS`.
        notify: ``(account, old_status, reason)`` when a reconnect re-activates an account.
    """

    def __init__(
        self,
        store: Store,
        providers: Mapping[str, Provider] | Callable[[str], Provider],
        *,
        redirect_base: str,
        state_ttl: int = 600,
        issuers: Mapping[str, str] | None = None,
        notify: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not redirect_base.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise OAuthError("redirect_base must be https (or http on loopback for development)")
        self.store = store
        self._providers = providers
        self.redirect_base = redirect_base.rstrip("/")
        self.state_ttl = state_ttl
        self.issuers = dict(DEFAULT_ISSUERS if issuers is None else issuers)
        self.notify = notify
        self.clock = clock

    def provider(self, name: str) -> Provider:
        """The provider instance named ``name``."""
        if callable(self._providers):
            return self._providers(name)
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderNotFoundError(name, list(self._providers)) from None

    def redirect_uri(self, provider: str) -> str:
        """The exact callback URL registered for ``provider`` (one path per provider)."""
        if not _PROVIDER_RE.match(provider):
            raise OAuthError("invalid provider name")
        return f"{self.redirect_base}/{provider}"

    async def begin(
        self,
        *,
        app_user_id: str,
        provider: str,
        scopes: Sequence[str] | None = None,
        login_hint: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> AuthorizationStart:
        """Create a one-time state (and PKCE verifier) and the provider's consent URL."""
        instance = self.provider(provider)
        redirect_uri = self.redirect_uri(provider)
        state = secrets.token_urlsafe(32)
        verifier: str | None = None
        challenge: str | None = None
        if instance.capabilities.pkce:
            # RFC 7636 §4.1: 43-128 unreserved characters; 48 random bytes -> 64 base64url
            verifier = secrets.token_urlsafe(48)
            challenge = pkce_challenge(verifier)
        chosen = tuple(scopes if scopes is not None else instance.default_scopes)
        expires_at = int(self.clock()) + self.state_ttl
        await offload(
            self.store.credentials.put_oauth_state,
            state_hash=state_hash(state),
            app_user_id=app_user_id,
            provider=provider,
            redirect_uri=redirect_uri,
            code_verifier=None if verifier is None else Secret(verifier),
            scopes=chosen,
            expires_at=expires_at,
        )
        url = instance.authorization_url(
            AuthorizationRequest(
                redirect_uri=redirect_uri,
                state=state,
                scopes=chosen,
                code_challenge=challenge,
                login_hint=login_hint,
                extra=dict(extra or {}),
            )
        )
        return AuthorizationStart(
            url=url, provider=provider, redirect_uri=redirect_uri, expires_at=expires_at
        )

    async def complete(
        self, provider: str, params: Mapping[str, str], *, app_user_id: str | None = None
    ) -> Account:
        """Handle the callback that arrived on ``provider``'s redirect path.

        ``params`` are the callback's query parameters. Pass ``app_user_id`` (the user
        logged in to your app in this browser) to also refuse a state started by another
        user (a login-CSRF attempt). Raises
        :class:`~calbridge.errors.InvalidStateError` (state missing, unknown, reused,
        expired, or started for another provider / issuer) before any token request, and
        :class:`~calbridge.errors.OAuthError` when the user declined or no code came.
        """
        state = params.get("state") or ""
        if not state:
            raise InvalidStateError("the callback carries no state; start the connection again")
        record = await offload(self.store.credentials.consume_oauth_state, state_hash(state))
        if record is None:
            raise InvalidStateError(
                "the state is unknown, already used or expired; start the connection again"
            )
        self._check_binding(provider, record, params)
        if app_user_id is not None and not secrets.compare_digest(
            app_user_id.encode(), record.app_user_id.encode()
        ):
            raise InvalidStateError("the state was started by another user of this app")
        error = params.get("error")
        if error:
            code = error if _ERROR_RE.match(error) else "error"
            raise OAuthError(f"the provider returned {code!r}; the user may have declined")
        code_value = params.get("code") or ""
        if not code_value:
            raise OAuthError("the callback carries no authorization code")
        grant = await self.provider(provider).exchange_code(
            code=code_value,
            redirect_uri=record.redirect_uri,
            code_verifier=None if record.code_verifier is None else record.code_verifier.reveal(),
        )
        return await offload(self._store_grant, provider, record, grant)

    def _check_binding(
        self, provider: str, record: OAuthStateRecord, params: Mapping[str, str]
    ) -> None:
        if record.provider != provider:
            raise InvalidStateError(
                f"the state was issued for {record.provider!r} but arrived at the {provider!r} "
                "callback (possible mix-up attack); start the connection again"
            )
        if record.redirect_uri != self.redirect_uri(provider):
            raise InvalidStateError("the state is bound to another redirect URI")
        iss = params.get("iss")
        if iss is not None:
            expected = self.issuers.get(provider)
            if expected is None or not secrets.compare_digest(iss, expected):
                raise InvalidStateError(
                    f"the callback's issuer does not match {provider!r} (mix-up defence)"
                )

    def _store_grant(self, provider: str, record: OAuthStateRecord, grant: TokenGrant) -> Account:
        account, old = self.store.save_grant(record.app_user_id, provider, grant)
        if old is not None and self.notify is not None:
            self.notify(account, old, "reconnected")
        return account
