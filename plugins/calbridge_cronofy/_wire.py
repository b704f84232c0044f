"""Cronofy's JSON as attrs classes (the wire model), apart from calbridge's domain model.

Read Events pages, the hot path, have their own msgspec model in ``_wire_read``.

Cronofy's keys are already snake_case, so field names are the JSON names; the few dotted
keys of ``/v1/userinfo`` (``cronofy.type``, ``cronofy.data``) are renamed in the converter.
Unknown keys are ignored (Cronofy adds fields over time); ``None`` fields are omitted on
output. :data:`WIRE` is derived from :func:`calbridge.make_converter`, never cattrs' global
converter. Shapes follow docs.cronofy.com and the official SDKs' fixtures.

Token fields are :class:`calbridge.Secret` from the moment they are parsed, so no wire
value ever prints a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

import calbridge
from calbridge.errors import ProviderResponseError

__all__ = [
    "WIRE",
    "Authorization",
    "ChannelFilters",
    "ChannelWire",
    "CronofyCalendar",
    "ErrorDetail",
    "EventUpsert",
    "FreeBusyBlock",
    "LinkingProfile",
    "LocalizedTime",
    "Location",
    "NotificationBody",
    "NotificationEnvelope",
    "Profile",
    "TokenResponse",
    "UserInfo",
    "UserInfoData",
    "WireTime",
    "parse",
]

T = TypeVar("T")

PROVIDER = "cronofy"


# --------------------------------------------------------------------------- OAuth


@attrs.frozen(kw_only=True)
class LinkingProfile:
    """``linking_profile`` of a code exchange: the calendar profile the user linked."""

    provider_name: str | None = None
    profile_id: str | None = None
    profile_name: str | None = None


@attrs.frozen(kw_only=True)
class TokenResponse:
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


@attrs.frozen(kw_only=True)
class CronofyCalendar:
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


@attrs.frozen(kw_only=True)
class Profile:
    """A calendar profile (one linked Google/Microsoft/Apple ... account)."""

    profile_id: str
    provider_name: str | None = None
    provider_service: str | None = None
    profile_name: str | None = None
    profile_connected: bool = True
    profile_initial_sync_required: bool | None = None
    profile_relink_url: str | None = None
    profile_calendars: tuple[CronofyCalendar, ...] = ()


@attrs.frozen(kw_only=True)
class Authorization:
    """``cronofy.data.authorization`` of userinfo."""

    scope: str = ""
    status: str | None = None


@attrs.frozen(kw_only=True)
class UserInfoData:
    """``cronofy.data`` of userinfo."""

    authorization: Authorization | None = None
    profiles: tuple[Profile, ...] = ()


@attrs.frozen(kw_only=True)
class UserInfo:
    """``GET /v1/userinfo`` (OpenID-style)."""

    sub: str
    email: str | None = None
    name: str | None = None
    zoneinfo: str | None = None
    cronofy_type: str | None = None
    cronofy_data: UserInfoData | None = None

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


@attrs.frozen(kw_only=True)
class LocalizedTime:
    """A start/end with its zone: ``{"time": "2014-09-13T20:00:00+01:00", "tzid": ...}``."""

    time: str
    tzid: str | None = None


#: a start/end: ``"2014-09-06"`` (all-day), ``"2014-09-13T19:00:00Z"`` or a LocalizedTime
WireTime = str | LocalizedTime


@attrs.frozen(kw_only=True)
class Location:
    """``location``."""

    description: str | None = None
    lat: str | None = None
    long: str | None = None


@attrs.frozen(kw_only=True)
class FreeBusyBlock:
    """One of ``free_busy``."""

    calendar_id: str
    start: WireTime
    end: WireTime
    free_busy_status: str = "busy"


@attrs.frozen(kw_only=True)
class EventUpsert:
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


@attrs.frozen(kw_only=True)
class ChannelFilters:
    """``filters`` of a channel (only non-default filters are echoed)."""

    calendar_ids: tuple[str, ...] | None = None
    only_managed: bool | None = None


@attrs.frozen(kw_only=True)
class ChannelWire:
    """A notification channel."""

    channel_id: str
    callback_url: str = ""
    filters: ChannelFilters = attrs.field(factory=ChannelFilters)


@attrs.frozen(kw_only=True)
class NotificationBody:
    """``notification``: ``changes_since`` only on ``change``."""

    type: str
    changes_since: str | None = None


@attrs.frozen(kw_only=True)
class NotificationEnvelope:
    """A push notification's body."""

    notification: NotificationBody
    channel: ChannelWire


@attrs.frozen(kw_only=True)
class ErrorDetail:
    """One entry of a 422 body ``{"errors": {field: [{key, description}]}}``."""

    key: str | None = None
    description: str | None = None


# --------------------------------------------------------------------------- the converter


def _time_structure(value: Any, _t: Any) -> WireTime:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("time"), str):
        tzid = value.get("tzid")
        return LocalizedTime(time=value["time"], tzid=tzid if isinstance(tzid, str) else None)
    raise ValueError(f"not a Cronofy time: {type(value).__name__}")


def _time_unstructure(value: WireTime) -> Any:
    if isinstance(value, LocalizedTime):
        out = {"time": value.time}
        if value.tzid:
            out["tzid"] = value.tzid
        return out
    return value


def _make_converter() -> cattrs.Converter:
    conv = calbridge.make_converter(reveal_secrets=True)
    conv.register_structure_hook(WireTime, _time_structure)
    conv.register_unstructure_hook(WireTime, _time_unstructure)
    conv.register_unstructure_hook(LocalizedTime, _time_unstructure)
    conv.register_structure_hook(
        UserInfo,
        make_dict_structure_fn(
            UserInfo,
            conv,
            cronofy_type=override(rename="cronofy.type"),
            cronofy_data=override(rename="cronofy.data"),
        ),
    )
    for cls in (Location, ChannelFilters, EventUpsert):  # inner classes first
        conv.register_unstructure_hook(
            cls, make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True)
        )
    return conv


#: the converter for Cronofy's JSON (it writes secrets' real text: wire bodies are sent)
WIRE: cattrs.Converter = _make_converter()


def parse(data: Any, cls: type[T]) -> T:
    """Structure ``data`` as ``cls``; unreadable input raises ProviderResponseError."""
    try:
        return WIRE.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError, AttributeError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else type(exc).__name__
        )
        raise ProviderResponseError(
            f"unexpected {cls.__name__} payload: {detail}", provider=PROVIDER
        ) from None
