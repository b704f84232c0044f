"""Microsoft Graph v1.0 JSON as attrs classes (the wire model), apart from the domain model.

Field names follow Python style and carry Graph's camelCase name as the attrs ``alias``;
:data:`WIRE` (a cattrs converter with ``use_alias=True``) reads Graph's JSON. Unknown keys
are ignored (Graph adds properties). Shapes: msgraph-sdk-python's generated models
(``event``, ``date_time_time_zone``, ``patterned_recurrence``, ``attendee``,
``subscription``, ``change_notification``).
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from calbridge.errors import ProviderResponseError

__all__ = [
    "WIRE",
    "DateTimeTimeZone",
    "EmailAddress",
    "GraphAttendee",
    "GraphEvent",
    "Recipient",
    "ResponseStatusWire",
    "Subscription",
    "TokenResponse",
    "parse",
]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class DateTimeTimeZone:
    """``dateTimeTimeZone``: wall-clock ``dateTime`` (no offset) read in ``timeZone``."""

    date_time: str = attrs.field(alias="dateTime")
    time_zone: str | None = attrs.field(default=None, alias="timeZone")


@attrs.frozen(kw_only=True)
class EmailAddress:
    """``emailAddress``."""

    address: str | None = None
    name: str | None = None


@attrs.frozen(kw_only=True)
class Recipient:
    """``recipient`` (the organizer)."""

    email_address: EmailAddress | None = attrs.field(default=None, alias="emailAddress")


@attrs.frozen(kw_only=True)
class ResponseStatusWire:
    """``responseStatus``: ``none|organizer|tentativelyAccepted|accepted|declined|notResponded``."""

    response: str | None = None
    time: str | None = None


@attrs.frozen(kw_only=True)
class GraphAttendee:
    """``attendee``: ``type`` is ``required|optional|resource``."""

    email_address: EmailAddress | None = attrs.field(default=None, alias="emailAddress")
    type: str | None = None
    status: ResponseStatusWire | None = None


@attrs.frozen(kw_only=True)
class ItemBody:
    """``itemBody``."""

    content_type: str | None = attrs.field(default=None, alias="contentType")
    content: str | None = None


@attrs.frozen(kw_only=True)
class Location:
    """``location`` (only the display name is mapped)."""

    display_name: str | None = attrs.field(default=None, alias="displayName")


@attrs.frozen(kw_only=True)
class GraphEvent:
    """``event``. ``recurrence`` stays a plain mapping (see ``_recurrence``)."""

    id: str
    change_key: str | None = attrs.field(default=None, alias="changeKey")
    ical_uid: str | None = attrs.field(default=None, alias="iCalUId")
    subject: str | None = None
    body: ItemBody | None = None
    start: DateTimeTimeZone | None = None
    end: DateTimeTimeZone | None = None
    original_start: str | None = attrs.field(default=None, alias="originalStart")
    original_start_time_zone: str | None = attrs.field(default=None, alias="originalStartTimeZone")
    original_end_time_zone: str | None = attrs.field(default=None, alias="originalEndTimeZone")
    is_all_day: bool = attrs.field(default=False, alias="isAllDay")
    is_cancelled: bool = attrs.field(default=False, alias="isCancelled")
    show_as: str | None = attrs.field(default=None, alias="showAs")
    sensitivity: str | None = None
    type: str | None = None
    series_master_id: str | None = attrs.field(default=None, alias="seriesMasterId")
    recurrence: dict[str, Any] | None = None
    attendees: list[GraphAttendee] = attrs.field(factory=list)
    organizer: Recipient | None = None
    location: Location | None = None
    created_date_time: str | None = attrs.field(default=None, alias="createdDateTime")
    last_modified_date_time: str | None = attrs.field(default=None, alias="lastModifiedDateTime")
    transaction_id: str | None = attrs.field(default=None, alias="transactionId")


@attrs.frozen(kw_only=True)
class Subscription:
    """``subscription`` (``clientState`` is deliberately not mapped: it stays a Secret)."""

    id: str
    resource: str | None = None
    change_type: str | None = attrs.field(default=None, alias="changeType")
    notification_url: str | None = attrs.field(default=None, alias="notificationUrl")
    lifecycle_notification_url: str | None = attrs.field(
        default=None, alias="lifecycleNotificationUrl"
    )
    expiration_date_time: str | None = attrs.field(default=None, alias="expirationDateTime")


@attrs.frozen(kw_only=True)
class TokenResponse:
    """The identity platform's token response."""

    access_token: str
    refresh_token: str | None = None
    expires_in: int | None = None
    scope: str | None = None
    token_type: str | None = None


def _make() -> cattrs.Converter:
    return make_converter(use_alias=True)


#: the converter for Graph JSON
WIRE = _make()


def parse(data: Any, cls: type[T]) -> T:
    """Structure Graph JSON into ``cls``; unreadable input raises ProviderResponseError."""
    if isinstance(data, dict):  # Graph writes null for absent values; defaults apply
        data = {k: v for k, v in data.items() if v is not None}
    try:
        return WIRE.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        message = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else type(exc).__name__
        )
        raise ProviderResponseError(
            f"Graph sent an unreadable {cls.__name__}: {message}", provider="outlook"
        ) from None
