"""Connections and credentials: accounts, their OAuth tokens and providers' change channels.

Re-exported by :mod:`calbridge.models` and :mod:`calbridge`; like the rest of the domain
model, every value is an ``attrs`` frozen class and every secret a :class:`Secret`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from ._secret import Secret, _opt_secret, _secret

__all__ = ["Account", "AccountStatus", "Channel", "TokenSet"]


@attrs.frozen(kw_only=True)
class Channel:
    """A change subscription at a provider (Cronofy channel, Google watch, Graph subscription)."""

    provider: str
    id: str
    callback_url: str
    account_id: str | None = None
    calendar_ids: tuple[str, ...] = ()
    #: provider-specific filters, e.g. ``{"only_managed": "true"}``
    filters: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    #: epoch seconds; None when the provider does not expire channels
    expires_at: int | None = None
    secret: Secret | None = attrs.field(default=None, converter=_opt_secret)
    #: Google's resourceId and similar secondary identifiers
    resource_id: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)


@attrs.frozen(kw_only=True)
class TokenSet:
    """OAuth tokens for one account. ``expires_at`` is integer epoch seconds."""

    access_token: Secret = attrs.field(converter=_secret)
    refresh_token: Secret | None = attrs.field(default=None, converter=_opt_secret)
    expires_at: int | None = None
    scope: tuple[str, ...] = ()
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret
    #: non-secret extras from the token response (e.g. Cronofy ``sub``, ``account_id``)
    extra: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def expired(self, now: float, leeway: float = 60.0) -> bool:
        """True when the access token expires within ``leeway`` seconds of ``now``."""
        return self.expires_at is not None and self.expires_at - leeway <= now


class AccountStatus(enum.StrEnum):
    """Whether an account's authorization works."""

    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    REVOKED = "revoked"


@attrs.frozen(kw_only=True)
class Account:
    """One app user's connection to one provider.

    An app user may hold several accounts at once (a legacy Google one and a Cronofy one).
    """

    app_user_id: str
    provider: str
    provider_account_id: str
    status: AccountStatus = AccountStatus.ACTIVE
    email: str | None = None
    id: str | None = None
