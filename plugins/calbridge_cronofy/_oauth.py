"""Cronofy OAuth on calbridge's OAuth client: Individual and Enterprise Connect.

* Consent is on the *app* host (``/oauth/authorize``, Enterprise Connect's
  ``/enterprise_connect/oauth/authorize``); tokens on the API host (``/oauth/token``,
  ``/oauth/token/revoke``), as JSON bodies carrying the client secret.
* Cronofy takes no PKCE: a challenge or verifier is left out.
* A refresh may return the same refresh token; the old one is kept when none comes.
  Token answers carry ``sub``, ``account_id`` and ``linking_profile``: kept in
  ``TokenSet.extra`` and the grant's details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import calbridge
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import AuthorizedClient, OAuthClient, TokenAnswer

from . import _convert as convert
from ._errors import token_error_for
from ._hosts import Hosts
from ._wire import TokenResponse, parse

__all__ = [
    "DEFAULT_SCOPES",
    "ENTERPRISE_SCOPES",
    "ServiceAccountAuthorization",
    "grant_from",
    "make_oauth",
]

PROVIDER = "cronofy"

#: scopes asked for when the caller names none
DEFAULT_SCOPES = (
    "read_account",
    "list_calendars",
    "read_events",
    "create_event",
    "delete_event",
    "read_free_busy",
    "create_calendar",
    "change_participation_status",
)
#: what an Enterprise Connect admin consents to when the caller names nothing
ENTERPRISE_SCOPES = ("service_account/accounts/manage",)


class ServiceAccountAuthorization(dict[str, str]):
    """One Enterprise Connect account authorization request (``email``, ``callback_url``,
    ``scope``, ``state``), as sent to ``/v1/service_account_authorizations``."""

    @classmethod
    def build(
        cls, *, email: str, callback_url: str, scopes: Sequence[str], state: str = ""
    ) -> ServiceAccountAuthorization:
        """An authorization request for one user of the service account's domain."""
        out = cls(email=email, callback_url=callback_url, scope=" ".join(scopes))
        if state:
            out["state"] = state
        return out


def _read_tokens(
    body: Mapping[str, Any], *, previous: calbridge.TokenSet | None
) -> calbridge.TokenSet:
    return convert.token_set(parse(body, TokenResponse, what="token answer"), previous=previous)


def make_oauth(
    api: AuthorizedClient, settings: calbridge.ProviderSettings, hosts: Hosts
) -> OAuthClient:
    """Cronofy's OAuth client: consent on the app host, tokens on the API host."""
    return OAuthClient(
        client=api,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        authorize_url=f"{hosts.app}/oauth/authorize",
        token_url=f"{hosts.api}/oauth/token",
        revoke_url=f"{hosts.api}/oauth/token/revoke",
        errors=token_error_for,
        pkce_methods=(),
        body="json",
        secret_required=True,
        revoke_with_client=True,
        read_tokens=_read_tokens,
    )


def grant_from(answer: TokenAnswer) -> calbridge.TokenGrant:
    """The grant of a code exchange: the account is ``sub`` (or ``account_id``, or the
    service account's id); ``sub``, ``account_id``, ``linking_profile``,
    ``service_account_id`` and ``scope`` are kept as details."""
    raw = answer.body
    wire = parse(raw, TokenResponse, what="token answer")
    account = wire.sub or wire.account_id or wire.service_account_id
    if not account:
        raise ProviderResponseError("the token answer names no account (sub)", provider=PROVIDER)
    details: dict[str, Any] = {
        k: raw[k]
        for k in ("sub", "account_id", "linking_profile", "service_account_id", "scope")
        if k in raw
    }
    profile = wire.linking_profile
    email = profile.profile_name if profile and "@" in (profile.profile_name or "") else None
    return calbridge.TokenGrant(
        tokens=answer.tokens, provider_account_id=account, email=email, details=details
    )
