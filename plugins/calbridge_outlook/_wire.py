"""Microsoft Graph v1.0 JSON as msgspec structs: one wire model for reads and writes.

Every Graph object calbridge reads or sends (events, subscriptions) is a
:class:`calbridge.toolkit.WireStruct` here, read with :func:`calbridge.toolkit.decode_wire`
and written with :func:`calbridge.toolkit.wire_dict`; the domain model is ``_convert``'s
business. Shapes: msgraph-sdk-python's generated models (``event``, ``subscription``).

* Attribute names follow Python style; each camelCase JSON key is the field's ``name``.
* Graph writes ``null`` for absent values, so every field accepts it; ``None`` and default
  fields are left out of request bodies. Unknown keys are ignored (Graph adds
  properties; the whole object stays in ``Event.raw``).
* Events are the read hot path (every event of every ``calendarView`` and delta page):
  ``msgspec.convert`` reads the decoded JSON into :class:`GraphEvent` in C. It lists only
  the fields the conversion reads or writes (``recurrence`` stays a plain mapping, see
  ``_recurrence``): each one costs decoding time on every event.
* A subscription's ``clientState`` is a :class:`calbridge.Secret` from the moment it is
  read, and is written into a request body only deliberately (``reveal_secrets=True``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from msgspec import field

from calbridge import Secret
from calbridge.errors import ProviderResponseError
from calbridge.toolkit import WireStruct, decode_wire

__all__ = [
    "GraphAttendee",
    "GraphBody",
    "GraphDateTime",
    "GraphEmail",
    "GraphEvent",
    "GraphExtendedProperty",
    "GraphLocation",
    "GraphRecipient",
    "GraphResponse",
    "Subscription",
    "event_struct",
    "parse",
]

PROVIDER = "outlook"

T = TypeVar("T")


class GraphDateTime(WireStruct, frozen=True, gc=False):
    """``dateTimeTimeZone``: wall-clock ``dateTime`` (no offset) read in ``timeZone``."""

    date_time: str = field(name="dateTime")
    time_zone: str | None = field(default=None, name="timeZone")


class GraphEmail(WireStruct, frozen=True, gc=False):
    """``emailAddress``."""

    address: str | None = None
    name: str | None = None


class GraphRecipient(WireStruct, frozen=True, gc=False):
    """``recipient`` (the organizer)."""

    email_address: GraphEmail | None = field(default=None, name="emailAddress")


class GraphResponse(WireStruct, frozen=True, gc=False):
    """``responseStatus``: ``none|organizer|tentativelyAccepted|accepted|declined|notResponded``."""

    response: str | None = None
    time: str | None = None


class GraphAttendee(WireStruct, frozen=True, gc=False):
    """``attendee``: ``type`` is ``required|optional|resource``."""

    email_address: GraphEmail | None = field(default=None, name="emailAddress")
    type: str | None = None
    status: GraphResponse | None = None


class GraphBody(WireStruct, frozen=True, gc=False):
    """``itemBody``."""

    content_type: str | None = field(default=None, name="contentType")
    content: str | None = None


class GraphLocation(WireStruct, frozen=True, gc=False):
    """``location`` (only the display name is read and written)."""

    display_name: str | None = field(default=None, name="displayName")


class GraphExtendedProperty(WireStruct, frozen=True, gc=False):
    """``singleValueLegacyExtendedProperty``: ``String {set} Name <key>`` and its value."""

    id: str
    value: str | None = None


class GraphEvent(WireStruct, frozen=True):
    """``event``, read and written (``isAllDay`` and ``isCancelled`` absent or null mean
    false). ``id`` is Graph's: absent from a request body."""

    id: str | None = None
    change_key: str | None = field(default=None, name="changeKey")
    ical_uid: str | None = field(default=None, name="iCalUId")
    subject: str | None = None
    body: GraphBody | None = None
    start: GraphDateTime | None = None
    end: GraphDateTime | None = None
    original_start: str | None = field(default=None, name="originalStart")
    original_start_time_zone: str | None = field(default=None, name="originalStartTimeZone")
    is_all_day: bool | None = field(default=None, name="isAllDay")
    is_cancelled: bool | None = field(default=None, name="isCancelled")
    show_as: str | None = field(default=None, name="showAs")
    sensitivity: str | None = None
    type: str | None = None
    series_master_id: str | None = field(default=None, name="seriesMasterId")
    recurrence: dict[str, Any] | None = None
    attendees: list[GraphAttendee] | None = None
    organizer: GraphRecipient | None = None
    location: GraphLocation | None = None
    created_date_time: str | None = field(default=None, name="createdDateTime")
    last_modified_date_time: str | None = field(default=None, name="lastModifiedDateTime")
    transaction_id: str | None = field(default=None, name="transactionId")
    single_value_extended_properties: list[GraphExtendedProperty] | None = field(
        default=None, name="singleValueExtendedProperties"
    )


class Subscription(WireStruct, frozen=True, gc=False):
    """``subscription``: the create and renew bodies and Graph's answer. ``id`` is
    Graph's, absent from a request body."""

    id: str | None = None
    resource: str | None = None
    change_type: str | None = field(default=None, name="changeType")
    notification_url: str | None = field(default=None, name="notificationUrl")
    lifecycle_notification_url: str | None = field(default=None, name="lifecycleNotificationUrl")
    expiration_date_time: str | None = field(default=None, name="expirationDateTime")
    client_state: Secret | None = field(default=None, name="clientState")
    latest_supported_tls_version: str | None = field(default=None, name="latestSupportedTlsVersion")


def parse(data: Any, cls: type[T], *, what: str | None = None) -> T:
    """``data`` (JSON text or decoded JSON) as ``cls``; unreadable input raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    return decode_wire(data, cls, provider=PROVIDER, what=what)


def event_struct(data: Any) -> GraphEvent:
    """One decoded Graph event (a dict) as a :class:`GraphEvent`; anything else (an event
    without an ``id`` too) raises :class:`~calbridge.errors.ProviderResponseError`."""
    event = decode_wire(data, GraphEvent, provider=PROVIDER, what="event")
    if event.id is None:
        raise ProviderResponseError("unreadable event: it has no id", provider=PROVIDER)
    return event
