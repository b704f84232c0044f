"""The OAuth 2.0 client: authorization URL with PKCE, code exchange, refresh, revocation."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlencode

import attrs
import httpx

from .._http import read_json
from ..errors import (
    CalbridgeError,
    ConfigurationError,
    InvalidRequest,
    NotSupported,
    ProviderResponseError,
    ReauthRequired,
    Unavailable,
)
from ..models import Secret, TokenSet
from ..provider import AuthorizationRequest
from ._client import AuthorizedClient

__all__ = [
    "OAuthClient",
    "PkceMethod",
    "TokenAction",
    "TokenAnswer",
    "TokenErrorMapper",
    "TokenErrors",
    "TokenReader",
    "oauth_error_code",
    "pkce_challenge",
    "read_token_set",
]

#: how a PKCE challenge is derived from its verifier (RFC 7636 §4.2)
PkceMethod = Literal["S256", "plain"]
#: what a token endpoint call was doing, as error messages name it
TokenAction = Literal["code exchange", "refresh", "revoke"]

_JSON: Final = {"Accept": "application/json"}


def pkce_challenge(verifier: str, method: PkceMethod = "S256") -> str:
    """The code challenge for ``verifier``: ``base64url(sha256(verifier))`` without
    padding for ``S256``, the verifier itself for ``plain`` (RFC 7636 §4.2)."""
    if method == "plain":
        return verifier
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def oauth_error_code(response: httpx.Response) -> str:
    """The ``error`` of a token endpoint's JSON answer (RFC 6749 §5.2), else ``"unknown"``."""
    try:
        body = response.json()
    except ValueError:
        return "unknown"
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) and code else "unknown"


class TokenErrorMapper(Protocol):
    """Maps a token endpoint's refusal (any answer but 2xx) onto calbridge's error tree.

    :class:`TokenErrors` is the usual one; a provider whose token endpoint answers in its
    API's error format may map with its API's :class:`~calbridge.toolkit.ErrorMapper`.
    """

    def __call__(self, response: httpx.Response, /, *, action: TokenAction) -> CalbridgeError:
        """The error to raise for ``response``."""
        ...


@attrs.frozen(kw_only=True)
class TokenErrors:
    """The RFC 6749 §5.2 mapping of a token endpoint's refusals.

    * 5xx: :class:`~calbridge.errors.Unavailable`;
    * an ``error`` in ``client_codes``: :class:`~calbridge.errors.ConfigurationError` (the
      application's credentials are wrong: no user can fix it);
    * an ``error`` in ``reauth_codes``: :class:`~calbridge.errors.ReauthRequired` (the
      grant is gone: the user connects again);
    * anything else: :class:`~calbridge.errors.InvalidRequest`.

    Attributes:
        provider: the provider's name.
        issuer: who refuses, as a message names it (``"Google"``).
        client_codes: ``error`` values that blame the client credentials.
        reauth_codes: ``error`` values that end the grant.
    """

    provider: str
    issuer: str
    client_codes: frozenset[str] = frozenset({"invalid_client"})
    reauth_codes: frozenset[str] = frozenset({"invalid_grant"})

    def __call__(self, response: httpx.Response, /, *, action: TokenAction) -> CalbridgeError:
        """The error for a refused token endpoint call."""
        status = response.status_code
        if status >= 500:
            return Unavailable(f"{action} failed", provider=self.provider, status=status)
        code = oauth_error_code(response)
        if code in self.client_codes:
            return ConfigurationError(
                f"{self.issuer} refused the client credentials ({code}); check the "
                f"{self.provider} provider settings"
            )
        if code in self.reauth_codes:
            return ReauthRequired(
                f"{action} was refused ({code})", provider=self.provider, status=status
            )
        return InvalidRequest(
            f"{action} was refused ({code})", provider=self.provider, status=status
        )


class TokenReader(Protocol):
    """Builds the :class:`calbridge.TokenSet` of a token endpoint's JSON answer.

    ``previous`` is the refreshed token set (None for a code exchange).
    :func:`read_token_set` reads RFC 6749's fields; a provider with extras (Cronofy's
    ``sub`` and linking profile) reads its own.
    """

    def __call__(self, body: Mapping[str, Any], /, *, previous: TokenSet | None) -> TokenSet:
        """The token set of ``body``."""
        ...


def read_token_set(
    body: Mapping[str, Any], *, previous: TokenSet | None, provider: str, now: float
) -> TokenSet:
    """RFC 6749 §5.1: ``access_token``, ``refresh_token``, ``expires_in``, ``scope``,
    ``token_type``.

    A refresh answer without ``refresh_token`` keeps the previous one (Google sends none),
    one with it replaces it (Microsoft rotates them); the scope and the extras of the
    previous set stay unless the answer names a scope. ``expires_at`` is ``now`` plus
    ``expires_in``.
    """
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderResponseError(
            "the token endpoint's answer has no access_token", provider=provider
        )
    refresh_text = body.get("refresh_token")
    refresh: Secret | None
    if isinstance(refresh_text, str) and refresh_text:
        refresh = Secret(refresh_text)
    else:
        refresh = previous.refresh_token if previous is not None else None
    scope_text = body.get("scope")
    if isinstance(scope_text, str) and scope_text:
        scope = tuple(scope_text.split())
    else:
        scope = previous.scope if previous is not None else ()
    expires_in = body.get("expires_in")
    try:
        lifetime = int(expires_in) if expires_in else None
    except (TypeError, ValueError):
        raise ProviderResponseError(
            "the token endpoint's expires_in is not a number", provider=provider
        ) from None
    token_type = body.get("token_type")
    return TokenSet(
        access_token=Secret(access),
        refresh_token=refresh,
        expires_at=int(now) + lifetime if lifetime else None,
        scope=scope,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        extra=dict(previous.extra) if previous is not None else {},
    )


@attrs.frozen
class TokenAnswer:
    """A code exchange's result: the tokens and the endpoint's whole JSON answer.

    ``body`` holds the tokens in clear (and, for OpenID providers, the ``id_token``):
    read what the provider adds to it (who the account is), never log it.
    """

    tokens: TokenSet
    body: Mapping[str, Any] = attrs.field(repr=False)


@attrs.define(kw_only=True)
class OAuthClient:
    """A provider's OAuth 2.0 authorization-code client (RFC 6749, PKCE per RFC 7636).

    Token endpoint calls go through ``client.send``: retried, paced and broken like the
    API's calls, never authorised with a bearer token and never counted against the
    shared rate budget (see :func:`calbridge.send`).

    Example::

        oauth = OAuthClient(
            client=api,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            authorize_url="https://accounts.example/authorize",
            token_url="https://accounts.example/token",
            errors=TokenErrors(provider="example", issuer="Example"),
        )
        url = oauth.authorization_url(request, scopes=("calendar",))
        answer = await oauth.exchange(code=code, redirect_uri=uri, code_verifier=verifier)

    Attributes:
        client: sends the token endpoint calls (its ``provider`` names the errors).
        client_id, client_secret: the application's credentials, sent in the body.
        authorize_url, token_url: the endpoints; ``revoke_url`` is RFC 7009's, if any.
        errors: maps refusals (default: :class:`TokenErrors` with the provider's name).
        pkce_methods: the challenge methods the provider takes; empty: no PKCE (a
            challenge in a request is then left out, and so is the verifier).
        body: ``"form"`` (RFC 6749) or ``"json"`` (Cronofy) token request bodies.
        secret_required: refuse to call the token endpoint without a client secret.
        required_scopes: scopes added to every request's (Microsoft's ``offline_access``).
        idempotent_refresh: a refresh may be repeated after a lost answer (a refresh
            token that does not rotate); a code exchange never is.
        idempotent_revoke: a revocation may be repeated.
        revoke_with_client: send the client credentials with a revocation.
        already_revoked: statuses a revocation answers for a token already gone (Google
            400), which count as done.
        read_tokens: builds the token set (default :func:`read_token_set`).
        clock: epoch seconds, for ``expires_at``.
    """

    client: AuthorizedClient
    client_id: str
    client_secret: Secret | None
    authorize_url: str
    token_url: str
    revoke_url: str | None = None
    errors: TokenErrorMapper | None = None
    pkce_methods: tuple[PkceMethod, ...] = ("S256",)
    body: Literal["form", "json"] = "form"
    secret_required: bool = False
    required_scopes: tuple[str, ...] = ()
    idempotent_refresh: bool = False
    idempotent_revoke: bool = False
    revoke_with_client: bool = False
    already_revoked: frozenset[int] = frozenset()
    read_tokens: TokenReader | None = None
    clock: Callable[[], float] = time.time

    @property
    def provider(self) -> str:
        """The provider's name."""
        return self.client.provider

    def scope(self, requested: Sequence[str], default: Sequence[str]) -> str:
        """The scope parameter: ``requested`` (else ``default``) plus ``required_scopes``."""
        scopes = list(requested or default)
        scopes += [s for s in self.required_scopes if s not in scopes]
        return " ".join(scopes)

    def authorization_url(
        self,
        request: AuthorizationRequest,
        *,
        scopes: Sequence[str],
        params: Mapping[str, str] | None = None,
        url: str | None = None,
        pkce_method: PkceMethod = "S256",
    ) -> str:
        """The consent URL: authorization-code flow, scope, state, PKCE, login hint.

        Args:
            request: the redirect URI, state, PKCE challenge and hint; its ``scopes``
                (else ``scopes``) are asked for; its ``extra`` parameters go last, as given.
            scopes: the provider's default scopes.
            params: the provider's own parameters (Google ``access_type=offline``).
            url: another authorization endpoint than ``authorize_url`` (Cronofy's
                Enterprise Connect).
            pkce_method: how ``request.code_challenge`` was derived; it must be one of
                ``pkce_methods``.

        Raises:
            ConfigurationError: no ``client_id``, or a PKCE method the provider refuses.
        """
        if not self.client_id:
            raise ConfigurationError(f"the {self.provider} provider needs settings.client_id")
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": request.redirect_uri,
            "scope": self.scope(request.scopes, scopes),
            "state": request.state,
            **(params or {}),
        }
        if request.code_challenge and self.pkce_methods:
            if pkce_method not in self.pkce_methods:
                raise ConfigurationError(
                    f"the {self.provider} provider takes PKCE "
                    f"{' or '.join(self.pkce_methods)}, not {pkce_method}"
                )
            query["code_challenge"] = request.code_challenge
            query["code_challenge_method"] = pkce_method
        if request.login_hint:
            query["login_hint"] = request.login_hint
        query.update(request.extra)
        return f"{url or self.authorize_url}?{urlencode(query)}"

    async def exchange(
        self,
        *,
        code: str,
        redirect_uri: str,
        code_verifier: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> TokenAnswer:
        """Trade an authorization code for tokens (never repeated blindly: codes are
        single-use). ``params`` adds the provider's own fields (Microsoft ``scope``)."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier and self.pkce_methods:
            form["code_verifier"] = code_verifier
        form.update(params or {})
        response = await self._post(self.token_url, form, idempotent=False, client=True)
        body = self._body(response, "code exchange")
        return TokenAnswer(tokens=self._tokens(body, None), body=body)

    async def refresh(
        self, tokens: TokenSet, *, params: Mapping[str, str] | None = None
    ) -> TokenSet:
        """New tokens for ``tokens``' refresh token.

        Raises:
            ReauthRequired: there is no refresh token, or the grant is gone.
        """
        if tokens.refresh_token is None:
            raise ReauthRequired(
                "there is no refresh token to refresh with", provider=self.provider
            )
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token.reveal()}
        form.update(params or {})
        response = await self._post(
            self.token_url, form, idempotent=self.idempotent_refresh, client=True
        )
        return self._tokens(self._body(response, "refresh"), tokens)

    async def revoke(self, tokens: TokenSet) -> None:
        """Revoke the grant (RFC 7009) with the refresh token, else the access token.

        Raises:
            NotSupported: the provider has no revocation endpoint.
        """
        if self.revoke_url is None:
            raise NotSupported("revoke", provider=self.provider)
        token = tokens.refresh_token or tokens.access_token
        response = await self._post(
            self.revoke_url,
            {"token": token.reveal()},
            idempotent=self.idempotent_revoke,
            client=self.revoke_with_client,
        )
        if response.is_success or response.status_code in self.already_revoked:
            return
        raise self._errors(response, action="revoke")

    # -- plumbing ------------------------------------------------------------------------

    def _errors(self, response: httpx.Response, *, action: TokenAction) -> CalbridgeError:
        if self.errors is not None:
            return self.errors(response, action=action)
        return TokenErrors(provider=self.provider, issuer=self.provider)(response, action=action)

    async def _post(
        self, url: str, fields: dict[str, str], *, idempotent: bool, client: bool
    ) -> httpx.Response:
        if client:
            fields["client_id"] = self.client_id
            if self.client_secret is not None:
                fields["client_secret"] = self.client_secret.reveal()
            elif self.secret_required:
                raise ConfigurationError(
                    f"the {self.provider} provider needs settings.client_secret"
                )
        build = self.client.http.build_request
        if self.body == "json":
            request = build("POST", url, json=fields, headers=_JSON)
        else:
            request = build("POST", url, data=fields, headers=_JSON)
        return await self.client.send(request, idempotent=idempotent)

    def _body(self, response: httpx.Response, action: TokenAction) -> Mapping[str, Any]:
        if not response.is_success:
            raise self._errors(response, action=action)
        body = read_json(response, provider=self.provider, what="the token endpoint")
        if not isinstance(body, dict):
            raise ProviderResponseError(
                "the token endpoint's answer is not a JSON object", provider=self.provider
            )
        return body

    def _tokens(self, body: Mapping[str, Any], previous: TokenSet | None) -> TokenSet:
        if self.read_tokens is not None:
            return self.read_tokens(body, previous=previous)
        return read_token_set(body, previous=previous, provider=self.provider, now=self.clock())
