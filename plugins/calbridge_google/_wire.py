"""Google Calendar v3 JSON as msgspec structs: one wire model for reads and writes.

Every object calbridge reads from or sends to the Calendar API is a
:class:`calbridge.toolkit.WireStruct` here, read with :func:`calbridge.toolkit.decode_wire`
and written with :func:`calbridge.toolkit.wire_dict`; the domain model is ``_convert``'s
business. Shapes: the calendar v3 discovery document (``schemas.Event``,
``CalendarListEntry``, ``Channel``, ``FreeBusyResponse``).

* Attribute names follow Python style; each camelCase JSON key is the field's ``name``.
* Unknown keys are ignored (Google adds fields; the whole object stays in ``Event.raw``);
  ``None`` and default fields are left out of request bodies.
* Events are the read hot path (every event of every ``events.list`` page):
  ``msgspec.convert`` reads the decoded JSON into :class:`GEvent` in C (about 2 µs an
  event, against 15 through the cattrs model this replaced). :class:`GEvent` lists only
  the fields the conversion reads or writes: each one costs decoding time on every event.
* The channel ``token`` is a :class:`calbridge.Secret` from the moment it is read, and is
  written into the events.watch body only deliberately (``reveal_secrets=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from msgspec import field

from calbridge import Secret
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import WireStruct, decode_wire

__all__ = [
    "CalendarListEntry",
    "ErrorItem",
    "EventDateTime",
    "ExtendedProperties",
    "GAttendee",
    "GChannel",
    "GEvent",
    "GPerson",
    "error_items",
    "event_struct",
    "parse",
]

PROVIDER = "google"

T = TypeVar("T")


class EventDateTime(WireStruct, frozen=True, gc=False):
    """``EventDateTime``: ``date`` for all-day, else ``dateTime`` (+ IANA ``timeZone``)."""

    date: str | None = None
    date_time: str | None = field(default=None, name="dateTime")
    time_zone: str | None = field(default=None, name="timeZone")


class GPerson(WireStruct, frozen=True, gc=False):
    """``organizer`` / ``creator``."""

    email: str | None = None
    display_name: str | None = field(default=None, name="displayName")


class GAttendee(WireStruct, frozen=True, gc=False):
    """One entry of ``attendees``."""

    email: str | None = None
    display_name: str | None = field(default=None, name="displayName")
    optional: bool | None = None
    organizer: bool | None = None
    resource: bool | None = None
    response_status: str | None = field(default=None, name="responseStatus")


class ExtendedProperties(WireStruct, frozen=True):
    """``extendedProperties``: per-copy ``private`` and all-copies ``shared`` maps."""

    private: dict[str, str] | None = None
    shared: dict[str, str] | None = None


class GEvent(WireStruct, frozen=True):
    """``calendar#event``, read and written. A tombstone may carry only ``id`` (and
    ``status``)."""

    id: str | None = None
    etag: str | None = None
    status: str | None = None
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    i_cal_uid: str | None = field(default=None, name="iCalUID")
    start: EventDateTime | None = None
    end: EventDateTime | None = None
    recurrence: list[str] | None = None
    recurring_event_id: str | None = field(default=None, name="recurringEventId")
    original_start_time: EventDateTime | None = field(default=None, name="originalStartTime")
    transparency: str | None = None
    visibility: str | None = None
    attendees: list[GAttendee] | None = None
    organizer: GPerson | None = None
    created: str | None = None
    updated: str | None = None
    extended_properties: ExtendedProperties | None = field(default=None, name="extendedProperties")


class CalendarListEntry(WireStruct, frozen=True, gc=False):
    """``calendar#calendarListEntry``."""

    id: str
    summary: str | None = None
    summary_override: str | None = field(default=None, name="summaryOverride")
    time_zone: str | None = field(default=None, name="timeZone")
    access_role: str | None = field(default=None, name="accessRole")
    primary: bool | None = None
    deleted: bool | None = None


class GChannel(WireStruct, frozen=True, gc=False):
    """``api#channel`` (events.watch request and response, channels.stop request)."""

    id: str
    type: str | None = None
    address: str | None = None
    token: Secret | None = None
    expiration: str | None = None
    resource_id: str | None = field(default=None, name="resourceId")
    resource_uri: str | None = field(default=None, name="resourceUri")
    kind: str | None = None


class ErrorItem(WireStruct, frozen=True, gc=False):
    """One entry of ``error.errors`` in Google's error envelope."""

    domain: str | None = None
    reason: str | None = None
    message: str | None = None
    location: str | None = None
    location_type: str | None = field(default=None, name="locationType")


def parse(data: Any, cls: type[T], *, what: str | None = None) -> T:
    """``data`` (JSON text or decoded JSON) as ``cls``; unreadable input raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    return decode_wire(data, cls, provider=PROVIDER, what=what)


def event_struct(data: Any) -> GEvent:
    """One decoded Google event (a dict) as a :class:`GEvent`; anything else raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    return decode_wire(data, GEvent, provider=PROVIDER)


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
                out.append(decode_wire(dict(item), ErrorItem, provider=PROVIDER))
            except ProviderResponseError:
                continue
    return out
