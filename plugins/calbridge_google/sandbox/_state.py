"""The Google view's own state over the shared world: OAuth grants, sync and page tokens,
watch channels. Everything calendars and events is the world's.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs

from calbridge.sandbox import (
    Consent,
    Grant,
    GrantServer,
    NativeCalendar,
    PageTokens,
    RateLimit,
    TokenShapes,
    World,
    opaque_token,
)

from ._params import GoogleError

__all__ = ["GoogleSettings", "GoogleState", "PageState", "WatchChannel"]


@attrs.define
class GoogleSettings:
    """Knobs of the Google sandbox (``world.views["google"].settings``)."""

    access_token_lifetime: int = 3599
    code_lifetime: int = 600
    #: events.watch lifetime cap (Google: 7 days)
    max_channel_ttl: int = 7 * 24 * 3600
    #: sync tokens older than this (sandbox seconds) answer 410; None = never
    sync_token_ttl: float | None = None
    #: how far back ``updatedMin`` may reach before 410 updatedMinTooLongAgo
    updated_min_horizon: float = 28 * 24 * 3600
    #: ``exists`` messages per change (Google often sends several for one edit)
    notifications_per_change: int = 1
    #: messages a channel still sends after channels.stop (Google's known quirk)
    notifications_after_stop: int = 0
    #: per-user quota, ``(requests, seconds)`` sliding windows (Google: 600 a minute);
    #: none enforced by default. Past it: 403 ``usageLimits/userRateLimitExceeded``
    rate_limits: tuple[RateLimit, ...] = ()


@attrs.frozen
class PageState:
    """What an events.list ``pageToken`` stands for: the query it continues (its
    signature), the snapshot the first page was cut from, the sync token's sequence
    and the last sort key served."""

    signature: str
    snapshot: int
    since: int | None
    last: list[Any]


@attrs.define
class WatchChannel:
    """An events.watch channel."""

    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    email: str
    address: str
    token: str | None
    expiration: float  #: epoch seconds (sandbox clock)
    message_number: int = 0
    stopped: bool = False
    #: messages still sent after stop (``GoogleSettings.notifications_after_stop``)
    late_messages: int = 0
    unsubscribe: Any = None


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(token: str) -> dict[str, Any] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def signature(params: dict[str, Any]) -> str:
    """A short digest of request parameters (what a page or sync token is bound to)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.define
class Listing:
    """The sorted result of one events.list query: the sort keys and, in the same order,
    how to render each item (only the items of the page asked for are rendered)."""

    cal: NativeCalendar
    keys: list[list[Any]]
    renders: list[Callable[[], dict[str, Any]]]
    updated: dt.datetime | None  #: the latest ``updated`` of the events it was made from


#: listings kept (one per read in progress, roughly)
_LISTINGS = 16


class GoogleState:
    """Thread-safe registries of the Google view."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.settings = GoogleSettings()
        self._lock = threading.RLock()
        #: OAuth codes, grants and tokens
        self.oauth = GrantServer(
            self.now,
            tokens=TokenShapes(
                code=opaque_token("4/0A", 24),
                access=opaque_token("ya29.a0", 40),
                refresh=opaque_token("1//0g", 32),
            ),
        )
        #: events.list page tokens (kept until evicted, as Google's live long)
        self.pages: PageTokens[PageState] = PageTokens(self.now, token=opaque_token("CkIK", 30))
        self.channels: dict[str, WatchChannel] = {}
        self._sync_issued = 0
        #: sync tokens issued at or before this counter are expired, per calendar ("*" = all)
        self._expired_upto: dict[str, int] = {}
        self._sync_times: dict[int, float] = {}
        #: extra error reasons for injected errors, consumed in order
        self.injected_reasons: list[str] = []
        self._listings: OrderedDict[tuple[Any, ...], Listing] = OrderedDict()

    def listing(self, key: tuple[Any, ...]) -> Listing | None:
        """A query's sorted result computed for an earlier page, if still kept."""
        with self._lock:
            found = self._listings.get(key)
            if found is not None:
                self._listings.move_to_end(key)
            return found

    def keep_listing(self, key: tuple[Any, ...], listing: Listing) -> None:
        """Keep a query's sorted result for its next pages (the oldest go first)."""
        with self._lock:
            self._listings[key] = listing
            while len(self._listings) > _LISTINGS:
                self._listings.popitem(last=False)

    def now(self) -> float:
        """Sandbox epoch seconds."""
        return self.world.clock.timestamp()

    # -- OAuth ------------------------------------------------------------------------

    def mint_access(self, grant: Grant) -> tuple[str, int]:
        """A new access token for ``grant`` and its lifetime."""
        life = self.settings.access_token_lifetime
        return self.oauth.mint_access(grant, life), life

    def issue(self, email: str, client_id: str, scope: str) -> dict[str, Any]:
        """Tokens for a Google-native user (created if unknown), without the consent page.

        Raises ``ValueError`` for a user whose native provider is not Google.
        """
        key = email.lower()
        try:
            user = self.world.user(key)
        except KeyError:
            user = self.world.add_user(key, native="google")
        if user.native != "google":
            raise ValueError(f"{key} is a {user.native} user, not a Google one")
        grant = self.oauth.grant(Consent(client_id=client_id, subject=key, scope=scope))
        access, life = self.mint_access(grant)
        return {
            "access_token": access,
            "refresh_token": grant.refresh_token,
            "expires_in": life,
            "scope": scope,
            "token_type": "Bearer",
        }

    def user_for(self, access_token: str) -> str | None:
        """The email an unexpired, unrevoked access token belongs to."""
        grant = self.oauth.authenticate(access_token)
        return None if grant is None else grant.subject

    def expire_access(self, email: str) -> None:
        """Make every access token of ``email`` expired (refresh still works)."""
        self.oauth.expire_access(email)

    def revoke_user(self, email: str) -> None:
        """Revoke every grant of ``email`` (refresh answers invalid_grant)."""
        self.oauth.revoke_subject(email)

    # -- sync and page tokens -------------------------------------------------------------

    def issue_sync_token(self, calendar_id: str, sequence: int, sig: str) -> str:
        """A sync token meaning "changes of ``calendar_id`` after ``sequence``"."""
        with self._lock:
            self._sync_issued += 1
            n = self._sync_issued
            self._sync_times[n] = self.now()
        return _b64({"c": calendar_id, "s": sequence, "f": sig, "n": n})

    def read_sync_token(self, token: str, calendar_id: str) -> tuple[int, str]:
        """``(sequence, signature)`` of a valid token; 410 fullSyncRequired otherwise."""
        data = _unb64(token)
        gone = GoogleError(
            status=410,
            reason="fullSyncRequired",
            message="Sync token is no longer valid, a full sync is required.",
            domain="calendar",
            location="syncToken",
            location_type="parameter",
        )
        if data is None or data.get("c") != calendar_id or not isinstance(data.get("n"), int):
            raise gone
        n = int(data["n"])
        with self._lock:
            issued_at = self._sync_times.get(n)
            cutoff = max(self._expired_upto.get("*", 0), self._expired_upto.get(calendar_id, 0))
        ttl = self.settings.sync_token_ttl
        if issued_at is None or n <= cutoff or (ttl is not None and self.now() - issued_at > ttl):
            raise gone
        return int(data["s"]), str(data.get("f", ""))

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Every sync token issued so far (for one calendar, or all) now answers 410."""
        with self._lock:
            self._expired_upto[calendar_id or "*"] = self._sync_issued

    def page_token(self, page: PageState) -> str:
        """A ``pageToken`` for the next page of a query."""
        return self.pages.issue(page)

    def read_page_token(self, token: str, sig: str) -> PageState:
        """What ``token`` stands for; unknown, evicted or another query's is a 400."""
        page = self.pages.get(token)
        if page is None or page.signature != sig:
            raise GoogleError(
                status=400,
                reason="invalid",
                message="Invalid page token value.",
                location="pageToken",
                location_type="parameter",
            )
        return page

    # -- channels ------------------------------------------------------------------------

    def add_channel(self, channel: WatchChannel) -> None:
        """Register a channel (ids are unique)."""
        with self._lock:
            if channel.id in self.channels:
                raise GoogleError(
                    status=400,
                    reason="channelIdNotUnique",
                    message=f"Channel id {channel.id} not unique",
                )
            self.channels[channel.id] = channel

    def next_message(self, channel: WatchChannel) -> int | None:
        """The next message number, or None once the channel is stopped or expired."""
        with self._lock:
            if self.now() >= channel.expiration:
                return None
            if channel.stopped:
                if channel.late_messages <= 0:
                    return None
                channel.late_messages -= 1
            channel.message_number += 1
            return channel.message_number

    def expires_at(self, channel: WatchChannel) -> dt.datetime:
        """The channel's expiry as a datetime."""
        return dt.datetime.fromtimestamp(channel.expiration, dt.UTC)
