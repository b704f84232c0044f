"""Google Calendar v3 JSON as attrs classes (the wire model), apart from the domain model.

Field names follow Python style; each carries its Google name as the attrs ``alias``, and
:data:`WIRE` (a cattrs converter with ``use_alias=True``) reads and writes Google's JSON.
Unknown keys are ignored (Google adds fields) and ``None`` fields are omitted on output.
Shapes: the calendar v3 discovery document (``schemas.Event``, ``CalendarListEntry``,
``Channel``, ``FreeBusyResponse``). :class:`GEvent` builds request bodies; events read
back, by the thousand, go through the msgspec read model in ``_wire_read`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from calbridge.errors import ProviderResponseError

__all__ = [
    "WIRE",
    "CalendarListEntry",
    "ErrorItem",
    "EventDateTime",
    "ExtendedProperties",
    "GAttendee",
    "GChannel",
    "GEvent",
    "GPerson",
    "error_items",
    "parse",
]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class EventDateTime:
    """``EventDateTime``: ``date`` for all-day, else ``dateTime`` (+ IANA ``timeZone``)."""

    date: str | None = None
    date_time: str | None = attrs.field(default=None, alias="dateTime")
    time_zone: str | None = attrs.field(default=None, alias="timeZone")


@attrs.frozen(kw_only=True)
class GPerson:
    """``organizer`` / ``creator``."""

    email: str | None = None
    display_name: str | None = attrs.field(default=None, alias="displayName")


@attrs.frozen(kw_only=True)
class GAttendee:
    """One entry of ``attendees``."""

    email: str | None = None
    display_name: str | None = attrs.field(default=None, alias="displayName")
    optional: bool | None = None
    organizer: bool | None = None
    resource: bool | None = None
    response_status: str | None = attrs.field(default=None, alias="responseStatus")


@attrs.frozen(kw_only=True)
class ExtendedProperties:
    """``extendedProperties``: per-copy ``private`` and all-copies ``shared`` maps."""

    private: dict[str, str] | None = None
    shared: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class GEvent:
    """``calendar#event``. A tombstone may carry only ``id`` (and ``status``)."""

    id: str | None = None
    kind: str | None = None
    etag: str | None = None
    status: str | None = None
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    i_cal_uid: str | None = attrs.field(default=None, alias="iCalUID")
    start: EventDateTime | None = None
    end: EventDateTime | None = None
    recurrence: list[str] | None = None
    recurring_event_id: str | None = attrs.field(default=None, alias="recurringEventId")
    original_start_time: EventDateTime | None = attrs.field(default=None, alias="originalStartTime")
    transparency: str | None = None
    visibility: str | None = None
    attendees: list[GAttendee] | None = None
    organizer: GPerson | None = None
    created: str | None = None
    updated: str | None = None
    sequence: int | None = None
    extended_properties: ExtendedProperties | None = attrs.field(
        default=None, alias="extendedProperties"
    )


@attrs.frozen(kw_only=True)
class CalendarListEntry:
    """``calendar#calendarListEntry``."""

    id: str
    summary: str | None = None
    summary_override: str | None = attrs.field(default=None, alias="summaryOverride")
    time_zone: str | None = attrs.field(default=None, alias="timeZone")
    access_role: str | None = attrs.field(default=None, alias="accessRole")
    primary: bool | None = None
    deleted: bool | None = None


@attrs.frozen(kw_only=True)
class GChannel:
    """``api#channel`` (events.watch request and response)."""

    id: str
    type: str | None = None
    address: str | None = None
    token: str | None = None
    expiration: str | None = None
    resource_id: str | None = attrs.field(default=None, alias="resourceId")
    resource_uri: str | None = attrs.field(default=None, alias="resourceUri")
    kind: str | None = None


@attrs.frozen(kw_only=True)
class ErrorItem:
    """One entry of ``error.errors`` in Google's error envelope."""

    domain: str | None = None
    reason: str | None = None
    message: str | None = None
    location: str | None = None
    location_type: str | None = attrs.field(default=None, alias="locationType")


WIRE: cattrs.Converter = make_converter(use_alias=True, omit_if_default=True)


def parse(data: Any, cls: type[T], *, provider: str = "google") -> T:
    """Structure Google JSON into ``cls``; malformed input is a ProviderResponseError."""
    try:
        return WIRE.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else type(exc).__name__
        )
        raise ProviderResponseError(
            f"unreadable {cls.__name__} from Google: {detail}", provider=provider
        ) from None


def error_items(body: Any) -> list[ErrorItem]:
    """The ``error.errors`` items of an error response (empty when absent or malformed)."""
    if not isinstance(body, Mapping):
        return []
    err = body.get("error")
    if not isinstance(err, Mapping):
        return []
    items = err.get("errors")
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, Mapping):
            try:
                out.append(WIRE.structure(dict(item), ErrorItem))
            except (cattrs.BaseValidationError, TypeError, ValueError):
                continue
    return out
