"""Values the store returns besides the domain models (secret-free reprs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from calbridge.models import Channel, Secret, TokenSet

__all__ = [
    "AccountFactsRecord",
    "AuditEntry",
    "ChannelRecord",
    "CredentialRecord",
    "IdMapEntry",
    "InboxItem",
    "OAuthStateRecord",
    "ProviderStatus",
    "RotationReport",
    "RoutingState",
    "UserFactsRecord",
]


@attrs.frozen(kw_only=True)
class CredentialRecord:
    """An account's decrypted tokens plus the bookkeeping of the refresh protocol."""

    account_id: str
    provider: str
    tokens: TokenSet
    #: bumped on every token change
    generation: int
    key_id: str
    refresh_owner: str | None = None
    refresh_lease_until_ms: int | None = None
    #: when the tokens were last written (epoch s)
    updated_at: int = 0


@attrs.frozen(kw_only=True)
class RoutingState:
    """Where an app user's calendar operations go (owned by the router / migration)."""

    app_user_id: str
    phase: str
    primary_account_id: str | None = None
    secondary_account_id: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    version: int = 0
    updated_at: int = 0


@attrs.frozen(kw_only=True)
class ProviderStatus:
    """A provider-wide switch: ``paused`` after the app's credentials were refused."""

    provider: str
    status: str
    reason: str | None = None
    paused_until: int | None = None
    updated_at: int = 0

    @property
    def paused(self) -> bool:
        """True while the provider is paused (``paused_until`` None = until resumed)."""
        return self.status == "paused"


@attrs.frozen(kw_only=True)
class ChannelRecord:
    """A stored channel (secret decrypted) and its health."""

    channel: Channel
    health: str = "healthy"
    health_reason: str | None = None
    failures: int = 0
    last_notification_at: int | None = None
    created_at: int = 0
    updated_at: int = 0


@attrs.frozen(kw_only=True)
class IdMapEntry:
    """One provider's copy of an application event (key = the app's idempotency key)."""

    key: str
    provider: str
    app_user_id: str
    calendar_id: str
    event_id: str
    account_id: str | None = None
    ical_uid: str | None = None


@attrs.frozen(kw_only=True)
class InboxItem:
    """A stored webhook delivery."""

    id: int
    provider: str
    delivery_key: str
    kind: str
    channel_id: str | None
    account_id: str | None
    payload: Mapping[str, Any] = attrs.field(hash=False)
    received_at: int
    processed_at: int | None = None


@attrs.frozen(kw_only=True)
class AuditEntry:
    """One routing / migration / auth decision."""

    id: int
    at_ms: int
    actor: str
    action: str
    app_user_id: str | None = None
    account_id: str | None = None
    detail: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class OAuthStateRecord:
    """A consumed OAuth state (the PKCE verifier decrypted)."""

    app_user_id: str
    provider: str
    redirect_uri: str
    code_verifier: Secret | None = None
    scopes: tuple[str, ...] = ()
    created_at: int = 0
    expires_at: int = 0


@attrs.frozen(kw_only=True)
class RotationReport:
    """Progress of ``calbridge keys rotate``."""

    rotated: int
    remaining: int
    current_key_id: str


@attrs.frozen(kw_only=True)
class AccountFactsRecord:
    """One account as the router sees it (:meth:`RoutingRepository.user_facts`)."""

    account_id: str
    provider: str
    status: str
    email: str | None = None
    created_at: int = 0


@attrs.frozen(kw_only=True)
class UserFactsRecord:
    """A user's accounts and routing row, read in one statement."""

    app_user_id: str
    accounts: tuple[AccountFactsRecord, ...] = ()
    #: the routing row's phase (None: no row; ``""``: not in a migration)
    phase: str | None = None
    data: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
