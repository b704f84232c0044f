"""Cronofy's JSON as msgspec structs: one wire model for reads and writes.

Every object calbridge reads from or sends to Cronofy is a :class:`calbridge.toolkit.WireStruct`
here, read with :func:`calbridge.toolkit.decode_wire` and written with
:func:`calbridge.toolkit.wire_dict`; the domain model is ``_convert``'s business.

* Field names are Cronofy's JSON keys (already snake_case); the dotted keys of
  ``/v1/userinfo`` (``cronofy.type``, ``cronofy.data``) are given as the fields' ``name``.
* Unknown keys are ignored (Cronofy adds fields over time; they stay in ``raw``); ``None``
  and default fields are left out of request bodies.
* Token fields are :class:`calbridge.Secret` from the moment they are read.
* Read Events pages are the hot path: :func:`decode_page` reads ``pages`` and keeps each
  event as its own JSON text (``msgspec.Raw``), so the next page can be requested before
  any event is converted; :func:`decode_event` then reads one :class:`CronofyEvent`, and the
  text becomes :attr:`calbridge.Event.raw` (a :class:`calbridge.RawPayload`, decoded only
  if the application looks). The structs read there are ``gc=False`` and list only the
  fields the conversion reads: each one costs decoding time on every event.

Shapes follow docs.cronofy.com and the official SDKs' fixtures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import field

import calbridge
from calbridge.toolkit import WireStruct, decode_wire

__all__ = [
    "Authorization",
    "ChannelFilters",
    "ChannelWire",
    "CronofyCalendar",
    "CronofyEvent",
    "ErrorDetail",
    "EventUpsert",
    "EventsPage",
    "FreeBusyBlock",
    "LinkingProfile",
    "LocalizedTime",
    "Location",
    "NotificationBody",
    "NotificationEnvelope",
    "PagesInfo",
    "Person",
    "Profile",
    "TokenResponse",
    "UserInfo",
    "UserInfoData",
    "WireTime",
    "decode_event",
    "decode_page",
    "event_struct",
    "parse",
]

PROVIDER = "cronofy"

T = TypeVar("T")


# --------------------------------------------------------------------------- OAuth


class LinkingProfile(WireStruct, frozen=True, gc=False):
    """``linking_profile`` of a code exchange: the calendar profile the user linked."""

    provider_name: str | None = None
    profile_id: str | None = None
    profile_name: str | None = None


class TokenResponse(WireStruct, frozen=True):
    """``POST /oauth/token`` answer (code exchange, refresh, Enterprise Connect)."""

    access_token: calbridge.Secret
    token_type: str = "bearer"  # noqa: S105 - the token type, not a secret
    expires_in: int | None = None
    refresh_token: calbridge.Secret | None = None
    scope: str = ""
    account_id: str | None = None
    sub: str | None = None
    linking_profile: LinkingProfile | None = None
    #: Enterprise Connect service-account tokens
    service_account_id: str | None = None
    application_calendar_id: str | None = None


# --------------------------------------------------------------------------- identity


class CronofyCalendar(WireStruct, frozen=True, gc=False):
    """One entry of ``GET /v1/calendars`` (and ``POST /v1/calendars``' ``calendar``)."""

    calendar_id: str
    calendar_name: str = ""
    provider_name: str | None = None
    profile_id: str | None = None
    profile_name: str | None = None
    calendar_readonly: bool = False
    calendar_deleted: bool = False
    calendar_primary: bool = False
    calendar_integrated_conferencing_available: bool | None = None
    calendar_attachments_available: bool | None = None
    permission_level: str | None = None


class Profile(WireStruct, frozen=True):
    """A calendar profile (one linked Google/Microsoft/Apple ... account)."""

    profile_id: str
    provider_name: str | None = None
    provider_service: str | None = None
    profile_name: str | None = None
    profile_connected: bool = True
    profile_initial_sync_required: bool | None = None
    profile_relink_url: str | None = None
    profile_calendars: tuple[CronofyCalendar, ...] = ()


class Authorization(WireStruct, frozen=True, gc=False):
    """``cronofy.data.authorization`` of userinfo."""

    scope: str = ""
    status: str | None = None


class UserInfoData(WireStruct, frozen=True):
    """``cronofy.data`` of userinfo."""

    authorization: Authorization | None = None
    profiles: tuple[Profile, ...] = ()


class UserInfo(WireStruct, frozen=True):
    """``GET /v1/userinfo`` (OpenID-style)."""

    sub: str
    email: str | None = None
    name: str | None = None
    zoneinfo: str | None = None
    cronofy_type: str | None = field(default=None, name="cronofy.type")
    cronofy_data: UserInfoData | None = field(default=None, name="cronofy.data")

    @property
    def initial_sync_required(self) -> bool | None:
        """True while Cronofy still runs the first sync of any profile
        (``profile_initial_sync_required``); None when no profile says."""
        flags = [
            p.profile_initial_sync_required
            for p in (self.cronofy_data.profiles if self.cronofy_data else ())
            if p.profile_initial_sync_required is not None
        ]
        return any(flags) if flags else None


# --------------------------------------------------------------------------- events


class LocalizedTime(WireStruct, frozen=True, gc=False):
    """A start/end with its zone: ``{"time": "2014-09-13T20:00:00+01:00", "tzid": ...}``."""

    time: str
    tzid: str | None = None


#: a start/end: ``"2014-09-06"`` (all-day), ``"2014-09-13T19:00:00Z"`` or a LocalizedTime
WireTime = str | LocalizedTime


class Location(WireStruct, frozen=True, gc=False):
    """``location`` (its ``lat``/``long`` stay in ``raw``: calbridge neither reads nor
    writes them)."""

    description: str | None = None


class Person(WireStruct, frozen=True, gc=False):
    """``organizer`` or one of ``attendees`` as read (organizers have no ``status``)."""

    email: str | None = None
    display_name: str | None = None
    status: str | None = None


class CronofyEvent(WireStruct, frozen=True, gc=False):
    """One event of ``GET /v1/events``.

    ``event_uid`` is on every event; ``event_id`` only on the app's own (managed) events.
    ``start``/``end`` are ``"YYYY-MM-DD"`` (all-day), UTC text, or a :class:`LocalizedTime`.
    Only the fields the conversion reads are listed: each one listed costs decoding time
    on every event (``participation_status``, ``google_event_id`` and the rest stay in
    ``raw``).
    """

    calendar_id: str
    event_uid: str
    start: WireTime
    end: WireTime
    event_id: str | None = None
    summary: str | None = None
    description: str | None = None
    deleted: bool | None = None
    created: str | None = None
    updated: str | None = None
    location: Location | None = None
    attendees: tuple[Person, ...] | None = None
    organizer: Person | None = None
    transparency: str | None = None
    status: str | None = None
    recurring: bool | None = None
    series_identifier: str | None = None
    event_private: bool | None = None
    ical_uid: str | None = None


class PagesInfo(WireStruct, frozen=True, gc=False):
    """``pages``: ``next_page`` is absolute, and absent or empty on the last page."""

    current: int = 1
    total: int = 1
    next_page: str | None = None


class EventsPage(WireStruct, frozen=True):
    """A Read Events page: ``pages`` plus each event's JSON text, not yet decoded."""

    events: list[msgspec.Raw]
    pages: PagesInfo = PagesInfo()


class FreeBusyBlock(WireStruct, frozen=True, gc=False):
    """One of ``free_busy``."""

    calendar_id: str
    start: WireTime
    end: WireTime
    free_busy_status: str = "busy"


class EventUpsert(WireStruct, frozen=True):
    """Body of ``POST /v1/calendars/{calendar_id}/events`` (upsert)."""

    summary: str
    start: WireTime
    end: WireTime
    event_id: str | None = None
    event_uid: str | None = None
    description: str | None = None
    tzid: str | None = None
    location: Location | None = None
    transparency: str | None = None
    event_private: bool | None = None
    attendees: Mapping[str, list[dict[str, str]]] | None = None
    recurrence: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------- channels and push


class ChannelFilters(WireStruct, frozen=True):
    """``filters`` of a channel (only non-default filters are echoed)."""

    calendar_ids: tuple[str, ...] | None = None
    only_managed: bool | None = None


class ChannelWire(WireStruct, frozen=True):
    """A notification channel."""

    channel_id: str
    callback_url: str = ""
    filters: ChannelFilters = ChannelFilters()


class NotificationBody(WireStruct, frozen=True, gc=False):
    """``notification``: ``changes_since`` only on ``change``."""

    type: str
    changes_since: str | None = None


class NotificationEnvelope(WireStruct, frozen=True):
    """A push notification's body."""

    notification: NotificationBody
    channel: ChannelWire


class ErrorDetail(WireStruct, frozen=True, gc=False):
    """One entry of a 422 body ``{"errors": {field: [{key, description}]}}``."""

    key: str | None = None
    description: str | None = None


# --------------------------------------------------------------------------- reading


def parse(data: Any, cls: type[T], *, what: str | None = None) -> T:
    """``data`` (JSON text or decoded JSON) as ``cls``; unreadable input raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    return decode_wire(data, cls, provider=PROVIDER, what=what)


def decode_page(content: bytes) -> EventsPage:
    """One Read Events page from its bytes; anything else raises ProviderResponseError."""
    return decode_wire(content, EventsPage, provider=PROVIDER, what="events page")


def decode_event(text: msgspec.Raw | bytes) -> CronofyEvent:
    """One event from its JSON text; unreadable input raises ProviderResponseError."""
    return decode_wire(text, CronofyEvent, provider=PROVIDER, what="event")


def event_struct(data: Any) -> CronofyEvent:
    """A :class:`CronofyEvent` from already-decoded JSON (a dict), with the same checks."""
    return decode_wire(data, CronofyEvent, provider=PROVIDER, what="event")
