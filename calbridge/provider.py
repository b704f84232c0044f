"""The provider contract: what every calendar provider plugin implements.

A provider is a class with a registered ``name`` and declared :class:`Capabilities`.
calbridge creates one instance per bridge, passing the shared ``httpx.AsyncClient`` and the
provider's :class:`ProviderSettings`; providers never create HTTP clients themselves.

Per-user calls take a :class:`Session`, which hands out the account's current access token
and performs a (single-flight, persisted) refresh when the provider reports the token stale.
A provider answers a 401 by calling ``await session.refresh(stale)`` once and retrying.

Operations a provider cannot perform raise :class:`calbridge.errors.NotSupported`; nothing
silently does nothing. Example of the smallest provider::

    class ExampleProvider(calbridge.Provider):
        name = "example"
        capabilities = calbridge.Capabilities(write=False)

        async def list_calendars(self, session):
            return [calbridge.Calendar(id="main", provider=self.name, name="Main")]
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attrs
import httpx

from ._budget import note_account
from .errors import NotSupported
from .models import (
    Account,
    Calendar,
    ChangePage,
    Channel,
    Event,
    EventDraft,
    FreeBusy,
    Secret,
    TimeRange,
    TokenSet,
)

__all__ = [
    "AuthorizationRequest",
    "Capabilities",
    "ChannelLookup",
    "ChannelRequest",
    "Notification",
    "NotificationKind",
    "Provider",
    "ProviderSettings",
    "Session",
    "StaticTokenSource",
    "TokenGrant",
    "TokenSource",
    "WebhookReply",
    "WebhookRequest",
]


def _opt_secret(value: str | Secret | None) -> Secret | None:
    return value if value is None or isinstance(value, Secret) else Secret(value)


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a provider can do. Core reads these instead of guessing."""

    #: the provider can push change notifications to a callback URL
    push: bool = False
    #: changes can be read incrementally from a cursor
    incremental_sync: bool = True
    free_busy: bool = True
    write: bool = True
    #: create is idempotent on the caller's key at the provider itself
    idempotent_create: bool = True
    #: the provider expands recurring series into instances for window reads
    server_side_expansion: bool = True
    #: OAuth with PKCE (S256)
    pkce: bool = False
    #: refresh tokens rotate on every refresh
    rotating_refresh_tokens: bool = False
    #: provider channels expire and must be renewed
    channel_expiry: bool = False

    def as_dict(self) -> dict[str, bool]:
        """The flags as a plain mapping (for JSON output)."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """Configuration for one provider (from the bridge's config file, env or code).

    ``base_urls`` overrides the provider's hosts, e.g. to point at a sandbox:
    ``{"api": "http://127.0.0.1:8800/cronofy", "app": "http://127.0.0.1:8800/cronofy"}``.
    """

    client_id: str = ""
    client_secret: Secret | None = attrs.field(default=None, converter=_opt_secret)
    base_urls: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    #: provider-specific options (data centre, tenant, page size ...)
    options: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def option(self, key: str, default: Any = None) -> Any:
        """One provider-specific option."""
        return self.options.get(key, default)


@attrs.frozen(kw_only=True)
class AuthorizationRequest:
    """Everything a provider needs to build its authorization URL.

    ``state`` and the PKCE ``code_challenge`` come from calbridge's OAuth state store.
    """

    redirect_uri: str
    state: str
    scopes: tuple[str, ...] = ()
    code_challenge: str | None = None
    login_hint: str | None = None
    extra: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class TokenGrant:
    """The result of a code exchange: tokens plus who they belong to."""

    tokens: TokenSet
    provider_account_id: str
    email: str | None = None
    #: non-secret details (Cronofy ``linking_profile``, Graph tenant ...)
    details: Mapping[str, Any] = attrs.field(factory=dict, hash=False)


class TokenSource(Protocol):
    """Where a :class:`Session` gets tokens. Core's implementation persists and locks."""

    async def get(self) -> TokenSet:
        """The current tokens (refreshed first if they are about to expire)."""
        ...

    async def refresh(self, stale: TokenSet) -> TokenSet:
        """Refresh once, unless someone already replaced ``stale``; return the new tokens."""
        ...


@attrs.define
class StaticTokenSource:
    """A token source over tokens held in memory, refreshing through a callable.

    Used by tests and by scripts that manage tokens themselves.
    """

    tokens: TokenSet
    refresher: Callable[[TokenSet], Awaitable[TokenSet]] | None = None
    refreshes: int = 0

    async def get(self) -> TokenSet:
        """Return the held tokens."""
        return self.tokens

    async def refresh(self, stale: TokenSet) -> TokenSet:
        """Refresh through ``refresher`` unless the tokens changed meanwhile."""
        if self.tokens is not stale and self.tokens.access_token != stale.access_token:
            return self.tokens
        if self.refresher is None:
            from .errors import ReauthRequired

            raise ReauthRequired(
                "the access token was refused and cannot be refreshed", provider="static"
            )
        self.tokens = await self.refresher(stale)
        self.refreshes += 1
        return self.tokens


@attrs.define
class Session:
    """One account's authority to call its provider."""

    account: Account
    tokens: TokenSource

    async def access_token(self) -> TokenSet:
        """The current token set; put ``.access_token.reveal()`` in the header, nowhere else.

        The calls the calling task makes next are this account's: the shared rate budget
        shares its grants fairly between accounts (see ``calbridge._budget.note_account``).
        """
        account = self.account
        note_account(account.id or f"{account.provider}:{account.provider_account_id}")
        return await self.tokens.get()

    async def refresh(self, stale: TokenSet) -> TokenSet:
        """Force one refresh after the provider refused ``stale`` (401)."""
        return await self.tokens.refresh(stale)


@attrs.frozen(kw_only=True)
class ChannelRequest:
    """Ask a provider to push changes of some calendars to ``callback_url``."""

    callback_url: str
    calendar_ids: tuple[str, ...] = ()
    #: per-channel secret (Google token, Graph clientState); None when the provider signs
    secret: Secret | None = None
    #: desired lifetime in seconds (providers cap it)
    ttl_seconds: int | None = None
    filters: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen(kw_only=True)
class WebhookRequest:
    """An incoming push request, exactly as received. Header names are lower-case."""

    method: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def build(
        cls,
        *,
        headers: Mapping[str, str] | Sequence[tuple[str, str]],
        body: bytes,
        method: str = "POST",
        query: Mapping[str, str] | None = None,
    ) -> WebhookRequest:
        """Normalise header names to lower case."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        return cls(
            method=method.upper(),
            headers={k.lower(): v for k, v in items},
            body=body,
            query=dict(query or {}),
        )


class NotificationKind(enum.StrEnum):
    """What a verified notification asks calbridge to do."""

    CHANGE = "change"  #: something changed; sync the channel's calendars
    VERIFICATION = "verification"  #: handshake only (Cronofy verification, Graph validation)
    SYNC = "sync"  #: channel-start message (Google ``sync``): acknowledge, nothing to do
    PROFILE_DISCONNECTED = "profile_disconnected"  #: the account lost its calendar link
    INITIAL_SYNC_COMPLETED = "initial_sync_completed"
    RENEW = "renew"  #: the channel must be renewed (Graph reauthorizationRequired)
    RESUBSCRIBE = "resubscribe"  #: the channel is gone; recreate and resync
    RESYNC = "resync"  #: notifications were missed; resync
    IGNORED = "ignored"  #: a type calbridge does not know; acknowledged


@attrs.frozen(kw_only=True)
class WebhookReply:
    """What the endpoint must answer (e.g. Graph's validation token echo)."""

    status: int = 202
    body: bytes = b""
    content_type: str = "text/plain"


@attrs.frozen(kw_only=True)
class Notification:
    """A verified push notification, ready to be stored in the inbox.

    ``delivery_key`` is unique per delivery so duplicates are harmless.
    """

    provider: str
    kind: NotificationKind
    delivery_key: str
    channel_id: str | None = None
    account_id: str | None = None
    calendar_ids: tuple[str, ...] = ()
    #: provider hint of where to start reading (Cronofy ``changes_since``)
    changes_since: str | None = None
    reply: WebhookReply = attrs.field(factory=WebhookReply)
    raw: Mapping[str, Any] = attrs.field(factory=dict, hash=False, repr=False)


class ChannelLookup(Protocol):
    """Find a known channel by its id (a store read; never a provider call)."""

    async def __call__(self, channel_id: str) -> Channel | None: ...


class Provider(abc.ABC):
    """Base class of every calendar provider.

    Subclasses set ``name`` and ``capabilities`` and override what they support; the
    defaults raise :class:`~calbridge.errors.NotSupported`.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: scopes requested when the caller names none
    default_scopes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, http: httpx.AsyncClient, settings: ProviderSettings) -> None:
        self.http = http
        self.settings = settings

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def _unsupported(self, capability: str) -> NotSupported:
        return NotSupported(capability, provider=self.name)

    # -- OAuth -------------------------------------------------------------------------

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """The URL to send the user to for consent."""
        raise self._unsupported("oauth")

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """Trade an authorization code for tokens."""
        raise self._unsupported("oauth")

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """Refresh an access token. Keep the old refresh token when none comes back."""
        raise self._unsupported("oauth")

    async def revoke_tokens(self, tokens: TokenSet) -> None:
        """Revoke the authorization at the provider."""
        raise self._unsupported("revoke")

    # -- reads -------------------------------------------------------------------------

    @abc.abstractmethod
    async def list_calendars(self, session: Session) -> list[Calendar]:
        """Every calendar of the account."""

    def list_events(
        self,
        session: Session,
        calendar_id: str,
        window: TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Events overlapping ``window``, one provider page at a time (memory O(page))."""
        raise self._unsupported("list_events")

    def changes(
        self,
        session: Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ChangePage]:
        """Changes since ``cursor`` (a full read when None), page by page.

        The last page carries the new cursor. An expired cursor raises
        :class:`~calbridge.errors.SyncCursorExpired`.
        """
        raise self._unsupported("incremental_sync")

    # -- writes ------------------------------------------------------------------------

    async def create_event(
        self, session: Session, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """Create an event; the same ``idempotency_key`` never makes two events."""
        raise self._unsupported("write")

    async def update_event(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """Replace an event's fields; a stale ``etag`` raises Conflict."""
        raise self._unsupported("write")

    async def delete_event(self, session: Session, calendar_id: str, event_id: str) -> None:
        """Delete an event; deleting one already gone succeeds."""
        raise self._unsupported("write")

    async def free_busy(
        self, session: Session, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """Busy blocks of the calendars in ``window``."""
        raise self._unsupported("free_busy")

    # -- push --------------------------------------------------------------------------

    async def subscribe(self, session: Session, request: ChannelRequest) -> Channel:
        """Open a change channel."""
        raise self._unsupported("push")

    async def renew(self, session: Session, channel: Channel) -> Channel:
        """Extend or replace a channel before it expires; returns the live channel."""
        raise self._unsupported("push")

    async def unsubscribe(self, session: Session, channel: Channel) -> None:
        """Close a channel; closing one already closed succeeds."""
        raise self._unsupported("push")

    async def verify_notification(
        self, request: WebhookRequest, channels: ChannelLookup
    ) -> list[Notification]:
        """Verify a push request and parse it. Never calls the provider.

        Raises :class:`~calbridge.errors.NotificationRejected` on forged or unknown input.
        One request may carry several notifications (Graph batches them).
        """
        raise self._unsupported("push")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release resources the provider holds (not the shared HTTP client)."""
