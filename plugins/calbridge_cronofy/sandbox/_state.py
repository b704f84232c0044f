"""The Cronofy sandbox's own state: accounts, calendars, channels, the cache, settings.

Codes, grants and tokens are a :class:`calbridge.sandbox.GrantServer`'s (``engine.oauth``);
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Literal

import attrs

from calbridge.sandbox import Grant, NativeEvent, Occurrence, RateLimit

__all__ = [
    "Account",
    "CachedEvent",
    "Channel",
    "CronofyCalendar",
    "PendingWrite",
    "SandboxSettings",
    "granted_scopes",
    "is_service_account",
    "new_id",
    "new_token",
]

#: scopes granted when the authorize request names none
DEFAULT_SCOPE = "read_account list_calendars read_events create_event delete_event"


def new_id(prefix: str, nbytes: int = 12) -> str:
    """``prefix`` + random lower-case hex, e.g. ``acc_5ba21743f408617d1269ea1e``."""
    return prefix + secrets.token_hex(nbytes)


def new_token() -> str:
    """A 32-character token, shaped like Cronofy's access and refresh tokens."""
    return secrets.token_urlsafe(24)[:32]


@attrs.define(kw_only=True)
class SandboxSettings:
    """Knobs of the Cronofy sandbox (``world.views["cronofy"].settings``)."""

    #: seconds an access token lives
    access_token_ttl: int = 3600
    #: seconds a service-account token lives
    service_account_token_ttl: int = 1800
    #: seconds before a new account's first sync completes (0: at once); until then
    #: ``profile_initial_sync_required`` is true and reads are empty, then channels get
    #: ``profile_initial_sync_completed``
    initial_sync_delay: float = 0.0
    #: seconds after a 202 before an integrator write reaches the native calendar
    write_delay: float = 1.0
    #: seconds after a native change before its native push makes Cronofy sync
    native_push_delay: float = 2.0
    #: whether the native provider pushes changes to Cronofy (else only polling finds them)
    native_push: bool = True
    #: Cronofy polls each native calendar this often (seconds)
    poll_interval: float = 300.0
    #: sync window, days before and after now
    window_past_days: int = 42
    window_future_days: int = 201
    #: events per page of Read Events / Free Busy
    page_size: int = 100
    #: per-application limits: (requests, seconds) pairs; empty disables rate limiting
    rate_limits: tuple[RateLimit, ...] = ((50, 1.0), (500, 60.0))
    max_channels: int = 128
    #: a channel is closed when no notification to it has succeeded for this many seconds
    #: (counted from the first failure after its latest success); each notification is
    #: also retried for at most this long
    channel_failure_window: float = 24 * 3600.0
    #: native provider of users first seen at /oauth/authorize (``provider_name`` overrides)
    default_native: Literal["google", "microsoft"] = "google"
    #: seconds a paging snapshot stays readable
    page_ttl: float = 3600.0


@attrs.define(kw_only=True)
class Account:
    """A Cronofy account (one user, one linked calendar profile)."""

    sub: str
    email: str
    name: str
    profile_id: str
    provider_name: str  #: ``google`` or ``exchange``
    provider_service: str  #: ``gsuite`` or ``office365``
    time_zone: str
    profile_connected: bool = True
    initial_sync_done: bool = False


#: :attr:`calbridge.sandbox.Grant.kind` of an Enterprise Connect service account's grant
SERVICE_ACCOUNT = "service_account"


def is_service_account(grant: Grant) -> bool:
    """Whether ``grant`` is a service account's (Enterprise Connect), not an account's."""
    return grant.kind == SERVICE_ACCOUNT


def granted_scopes(grant: Grant) -> set[str]:
    """The granted scopes, with implied ones (``read_events`` implies free/busy)."""
    granted = set(grant.scope.split())
    if {"read_events", "read_write", "read_only"} & granted:
        granted |= {"read_events", "read_free_busy", "list_calendars", "read_account"}
    if "read_write" in granted:
        granted |= {"create_event", "delete_event", "create_calendar"}
    if "free_busy" in granted:
        granted.add("read_free_busy")
    return granted


@attrs.define(kw_only=True)
class CronofyCalendar:
    """Cronofy's id for one native calendar."""

    calendar_id: str
    native_id: str
    sub: str


@attrs.define(kw_only=True)
class CachedEvent:
    """Cronofy's cached copy of one native event (as of its last sync)."""

    event_uid: str
    native: NativeEvent
    #: when Cronofy's copy last changed (what ``last_modified`` filters on)
    last_modified: dt.datetime
    deleted: bool = False
    #: the latest version Cronofy showed: live and, for an exception, not cancelled (None if
    #: never); kept through cancellation and deletion, so the instances a removed series or
    #: occurrence had can be reported deleted with the uids and times they had
    last_shown: NativeEvent | None = None
    #: encoded JSON of this event's rows, by everything that shapes them (see ``_render``);
    #: emptied when :attr:`native` changes, so it only holds renderings of live versions
    rendered: dict[tuple[object, ...], tuple[NativeEvent, bytes]] = attrs.field(
        init=False, factory=dict, eq=False, repr=False
    )
    #: the :attr:`native` that :attr:`rendered` was filled for
    rendered_for: NativeEvent | None = attrs.field(init=False, default=None, eq=False, repr=False)
    #: the last Read Events row of this single event, reused while it is still the same
    row: tuple[Occurrence, CachedEvent, CronofyCalendar, str, str | None] | None = attrs.field(
        init=False, default=None, eq=False, repr=False
    )


@attrs.define(kw_only=True)
class ManagedLink:
    """A managed event: the app's ``event_id`` and the native event it became."""

    client_id: str
    calendar_id: str  #: Cronofy calendar id
    event_id: str
    native_id: str | None = None  #: None until the write was applied


@attrs.define(kw_only=True)
class PendingWrite:
    """An accepted (202) integrator write not yet applied to the native calendar."""

    client_id: str
    sub: str
    calendar_id: str
    op: Literal["upsert", "delete"]
    event_id: str | None = None
    event_uid: str | None = None
    body: dict[str, object] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class Channel:
    """A notification channel."""

    channel_id: str
    client_id: str
    sub: str
    callback_url: str
    calendar_ids: tuple[str, ...] = ()
    only_managed: bool = False
    closed: bool = False
    #: sandbox time of the first failed delivery since the last success
    failing_since: dt.datetime | None = None

    def filters_json(self) -> dict[str, object]:
        """The non-default filters, as Cronofy echoes them."""
        out: dict[str, object] = {}
        if self.calendar_ids:
            out["calendar_ids"] = list(self.calendar_ids)
        if self.only_managed:
            out["only_managed"] = True
        return out

    def json(self) -> dict[str, object]:
        """The channel object of Cronofy's responses and notifications."""
        return {
            "channel_id": self.channel_id,
            "callback_url": self.callback_url,
            "filters": self.filters_json(),
        }
