"""The authorization server every provider sandbox runs: codes, PKCE, grants and tokens.

A provider sandbox keeps its own endpoints (paths, parameters, error envelopes and token
bodies differ from provider to provider) and hands the protocol to one
:class:`GrantServer`:

* ``/authorize``: :meth:`PkcePolicy.challenge` reads ``code_challenge`` (and its method)
  by the provider's rules, :meth:`GrantServer.issue_code` records what was consented to;
* the code grant: :meth:`GrantServer.exchange_code` consumes the code, checks the client,
  its lifetime, the ``redirect_uri`` and the PKCE verifier (S256 or plain), in that order,
  and records a :class:`Grant`;
* the refresh grant: :meth:`GrantServer.refresh` (rotating the refresh token when the
  provider does);
* access tokens: :meth:`GrantServer.mint_access`, and :meth:`GrantServer.introspect` /
  :meth:`GrantServer.authenticate` for the API endpoints;
* revocation and the account faults: :meth:`GrantServer.revoke`,
  :meth:`GrantServer.revoke_subject`, :meth:`GrantServer.expire_access`.

A refusal is a :class:`GrantRefused` naming why (:data:`GrantRefusal`); each sandbox
answers it in its provider's words. Times are sandbox epoch seconds (``now``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from typing import Literal

import attrs

__all__ = [
    "AuthorizationCode",
    "Consent",
    "Grant",
    "GrantRefusal",
    "GrantRefused",
    "GrantServer",
    "PkceChallenge",
    "PkceMethod",
    "PkcePolicy",
    "TokenInfo",
    "TokenShapes",
    "opaque_token",
    "pkce_s256",
]

#: the PKCE transformations of RFC 7636 (section 4.2)
PkceMethod = Literal["S256", "plain"]

#: why the authorization server refused:
#: ``invalid_request`` (an unsupported ``code_challenge_method``), ``invalid_code``
#: (unknown, used or expired code, or another client's), ``redirect_mismatch``
#: (``redirect_uri`` differs from the authorize request's), ``invalid_verifier`` (PKCE
#: verification failed), ``invalid_refresh_token`` (unknown, revoked or another client's)
GrantRefusal = Literal[
    "invalid_request",
    "invalid_code",
    "redirect_mismatch",
    "invalid_verifier",
    "invalid_refresh_token",
]


class GrantRefused(Exception):
    """The authorization server refused a request; :attr:`reason` says why."""

    def __init__(self, reason: GrantRefusal) -> None:
        super().__init__(reason)
        #: why (see :data:`GrantRefusal`)
        self.reason: GrantRefusal = reason


def pkce_s256(verifier: str) -> str:
    """``BASE64URL(SHA256(verifier))`` without padding (RFC 7636, S256)."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


@attrs.frozen
class PkceChallenge:
    """The ``code_challenge`` of an authorize request and how it was derived."""

    value: str
    method: PkceMethod

    def verify(self, verifier: str | None) -> bool:
        """Whether ``verifier`` (the token request's ``code_verifier``) matches (constant time)."""
        if not verifier:
            return False
        derived = pkce_s256(verifier) if self.method == "S256" else verifier
        return hmac.compare_digest(derived.encode(), self.value.encode())


@attrs.frozen
class PkcePolicy:
    """A provider's PKCE rules at its authorize endpoint.

    Google, Microsoft's identity platform and RFC 7636 alike accept ``S256`` and ``plain``
    and read a challenge sent without a method as ``plain``.
    """

    #: the methods the provider accepts
    methods: frozenset[PkceMethod] = frozenset({"S256", "plain"})
    #: the method of a challenge sent without ``code_challenge_method``
    default_method: PkceMethod = "plain"

    def challenge(self, value: str | None, method: str | None) -> PkceChallenge | None:
        """The challenge of an authorize request (None without ``code_challenge``).

        Raises :class:`GrantRefused` (``invalid_request``) for a method the provider does
        not accept, with or without a challenge.
        """
        chosen = method or self.default_method
        if chosen not in self.methods:
            raise GrantRefused("invalid_request")
        if not value:
            return None
        return PkceChallenge(value, "S256" if chosen == "S256" else "plain")


def opaque_token(prefix: str = "", nbytes: int = 32) -> Callable[[], str]:
    """A token maker: ``prefix`` + ``nbytes`` random bytes, URL-safe base64."""

    def make() -> str:
        return prefix + secrets.token_urlsafe(nbytes)

    return make


@attrs.frozen(kw_only=True)
class TokenShapes:
    """How a provider's codes, access tokens and refresh tokens look (opaque to clients)."""

    code: Callable[[], str] = attrs.field(factory=lambda: opaque_token(nbytes=24))
    access: Callable[[], str] = attrs.field(factory=lambda: opaque_token(nbytes=32))
    refresh: Callable[[], str] = attrs.field(factory=lambda: opaque_token(nbytes=32))


@attrs.frozen(kw_only=True)
class Consent:
    """What was consented to at the authorize endpoint (or granted without one)."""

    client_id: str
    #: who the tokens act for: an email, or the provider's account id
    subject: str
    #: granted scopes, space-separated, as the provider echoes them
    scope: str
    #: whether a refresh token is issued (Google ``access_type=offline``, Microsoft
    #: ``offline_access``; Cronofy always)
    offline: bool = True
    #: what kind of principal ``subject`` is; the provider's own label (Cronofy:
    #: ``"service_account"``)
    kind: str = "user"


@attrs.define(kw_only=True)
class AuthorizationCode:
    """An issued authorization code (single use)."""

    consent: Consent
    redirect_uri: str
    challenge: PkceChallenge | None
    #: sandbox epoch seconds
    expires: float


@attrs.define(kw_only=True, eq=False)
class Grant:
    """One consent of one client: a refresh token and the access tokens minted from it."""

    client_id: str
    subject: str
    scope: str
    kind: str = "user"
    refresh_token: str | None = None
    #: access token -> expiry (sandbox epoch seconds)
    access_tokens: dict[str, float] = attrs.field(factory=dict)
    revoked: bool = False


@attrs.frozen
class TokenInfo:
    """What :meth:`GrantServer.introspect` knows of an access token."""

    grant: Grant
    #: sandbox epoch seconds
    expires: float
    #: unexpired (and its grant not revoked: revoked tokens are not introspected)
    active: bool


class GrantServer:
    """Authorization codes, grants and tokens of one provider sandbox (thread-safe).

    Args:
        now: sandbox epoch seconds (``world.clock.timestamp``).
        tokens: how codes and tokens look.
        pkce: the provider's PKCE rules (:attr:`pkce`).
        code_lifetime: seconds a code stays redeemable.
        rotate_refresh_tokens: each refresh answers a new refresh token and retires the
            old one (Microsoft); otherwise a refresh token lives as long as its grant.
        redirect_uri_required: the code grant must repeat the authorize request's
            ``redirect_uri``; when False (Cronofy) it is only compared when sent.
    """

    def __init__(
        self,
        now: Callable[[], float],
        *,
        tokens: TokenShapes | None = None,
        pkce: PkcePolicy | None = None,
        code_lifetime: float = 600.0,
        rotate_refresh_tokens: bool = False,
        redirect_uri_required: bool = True,
    ) -> None:
        self._now = now
        self.tokens = tokens or TokenShapes()
        self.pkce = pkce or PkcePolicy()
        self.code_lifetime = code_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.redirect_uri_required = redirect_uri_required
        self._lock = threading.RLock()
        self._codes: dict[str, AuthorizationCode] = {}
        self._grants: list[Grant] = []
        self._by_access: dict[str, Grant] = {}
        self._by_refresh: dict[str, Grant] = {}

    # -- authorize and the code grant ----------------------------------------------------

    def issue_code(
        self,
        consent: Consent,
        redirect_uri: str,
        challenge: PkceChallenge | None = None,
        *,
        lifetime: float | None = None,
    ) -> str:
        """A single-use code for ``consent``, redeemable ``lifetime`` seconds (default:
        :attr:`code_lifetime`) with ``redirect_uri`` and, if ``challenge``, its verifier."""
        value = self.tokens.code()
        life = self.code_lifetime if lifetime is None else lifetime
        with self._lock:
            self._codes[value] = AuthorizationCode(
                consent=consent,
                redirect_uri=redirect_uri,
                challenge=challenge,
                expires=self._now() + life,
            )
        return value

    def exchange_code(
        self, client_id: str, code: str, redirect_uri: str | None, verifier: str | None
    ) -> Grant:
        """Redeem ``code`` (consumed whatever the outcome) and record its grant.

        Raises :class:`GrantRefused`: ``invalid_code``, ``redirect_mismatch`` or
        ``invalid_verifier``, checked in that order.
        """
        with self._lock:
            pending = self._codes.pop(code, None)
        if (
            pending is None
            or pending.consent.client_id != client_id
            or pending.expires < self._now()
        ):
            raise GrantRefused("invalid_code")
        if (self.redirect_uri_required or redirect_uri) and pending.redirect_uri != redirect_uri:
            raise GrantRefused("redirect_mismatch")
        if pending.challenge is not None and not pending.challenge.verify(verifier):
            raise GrantRefused("invalid_verifier")
        return self.grant(pending.consent)

    def grant(self, consent: Consent) -> Grant:
        """Record a grant for ``consent`` (with a refresh token when it is ``offline``)."""
        grant = Grant(
            client_id=consent.client_id,
            subject=consent.subject,
            scope=consent.scope,
            kind=consent.kind,
            refresh_token=self.tokens.refresh() if consent.offline else None,
        )
        with self._lock:
            self._grants.append(grant)
            if grant.refresh_token is not None:
                self._by_refresh[grant.refresh_token] = grant
        return grant

    # -- the refresh grant and access tokens ---------------------------------------------

    def refresh(self, client_id: str, refresh_token: str) -> Grant:
        """The live grant of ``refresh_token``, its refresh token rotated when the provider
        rotates them. Raises :class:`GrantRefused` (``invalid_refresh_token``)."""
        with self._lock:
            grant = self._by_refresh.get(refresh_token)
            if grant is None or grant.revoked or grant.client_id != client_id:
                raise GrantRefused("invalid_refresh_token")
            if self.rotate_refresh_tokens:
                del self._by_refresh[refresh_token]
                grant.refresh_token = self.tokens.refresh()
                self._by_refresh[grant.refresh_token] = grant
            return grant

    def mint_access(self, grant: Grant, ttl: float) -> str:
        """A new access token of ``grant``, valid ``ttl`` seconds."""
        token = self.tokens.access()
        with self._lock:
            grant.access_tokens[token] = self._now() + ttl
            self._by_access[token] = grant
        return token

    def introspect(self, access_token: str) -> TokenInfo | None:
        """What is known of ``access_token``: None when unknown or its grant is revoked."""
        with self._lock:
            grant = self._by_access.get(access_token)
            if grant is None or grant.revoked:
                return None
            expires = grant.access_tokens[access_token]
        return TokenInfo(grant, expires, expires > self._now())

    def authenticate(self, access_token: str) -> Grant | None:
        """The grant of an unexpired, unrevoked access token (None otherwise)."""
        info = self.introspect(access_token)
        return info.grant if info is not None and info.active else None

    # -- revocation and account faults ---------------------------------------------------

    def revoke(self, token: str, *, client_id: str | None = None) -> Grant | None:
        """Revoke the grant an access or refresh token belongs to (only ``client_id``'s,
        when given); returns it, or None when unknown, already revoked or another
        client's."""
        with self._lock:
            grant = self._by_refresh.get(token) or self._by_access.get(token)
            if grant is None or grant.revoked:
                return None
            if client_id is not None and grant.client_id != client_id:
                return None
            self._revoke(grant)
            return grant

    def revoke_subject(self, subject: str, *, client_id: str | None = None) -> list[Grant]:
        """Revoke every live grant of ``subject`` (of one client, when given)."""
        with self._lock:
            targets = [
                g
                for g in self._grants
                if g.subject == subject
                and not g.revoked
                and (client_id is None or g.client_id == client_id)
            ]
            for grant in targets:
                self._revoke(grant)
        return targets

    def _revoke(self, grant: Grant) -> None:
        grant.revoked = True
        if grant.refresh_token is not None:
            self._by_refresh.pop(grant.refresh_token, None)
        for token in grant.access_tokens:
            self._by_access.pop(token, None)

    def expire_access(self, subject: str) -> None:
        """Every access token of ``subject`` expires now (refresh tokens still work)."""
        with self._lock:
            for grant in self._grants:
                if grant.subject == subject:
                    grant.access_tokens = dict.fromkeys(grant.access_tokens, 0.0)

    def grants(self, subject: str | None = None) -> list[Grant]:
        """Every grant recorded (of ``subject``, when given), revoked ones included."""
        with self._lock:
            return [g for g in self._grants if subject is None or g.subject == subject]
