"""The wire model of the events Graph sends back, read by msgspec (the read hot path).

Every event of every ``calendarView`` and delta page goes through here. Structuring each
one through cattrs cost most of the conversion; ``msgspec.convert`` reads the same decoded
JSON into these frozen structs in C. Attribute names are Python style, each JSON key given
as the field's ``name``. Graph writes ``null`` for absent values, so every field accepts
it. Only the fields the conversion reads are listed (``recurrence`` stays a plain mapping,
see ``_recurrence``); the whole object is kept as ``Event.raw``. Unknown keys are ignored;
a field of the wrong type is a :class:`~calbridge.errors.ProviderResponseError`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import field

from calbridge.errors import ProviderResponseError

__all__ = [
    "ReadAttendee",
    "ReadBody",
    "ReadDateTime",
    "ReadEmail",
    "ReadEvent",
    "ReadLocation",
    "ReadRecipient",
    "ReadResponse",
    "event_struct",
]

PROVIDER = "outlook"


class ReadDateTime(msgspec.Struct, frozen=True, gc=False):
    """``dateTimeTimeZone``: wall-clock ``dateTime`` (no offset) read in ``timeZone``."""

    date_time: str = field(name="dateTime")
    time_zone: str | None = field(default=None, name="timeZone")


class ReadEmail(msgspec.Struct, frozen=True, gc=False):
    """``emailAddress``."""

    address: str | None = None
    name: str | None = None


class ReadRecipient(msgspec.Struct, frozen=True, gc=False):
    """``recipient`` (the organizer)."""

    email_address: ReadEmail | None = field(default=None, name="emailAddress")


class ReadResponse(msgspec.Struct, frozen=True, gc=False):
    """``responseStatus``: ``none|organizer|tentativelyAccepted|accepted|declined|notResponded``."""

    response: str | None = None
    time: str | None = None


class ReadAttendee(msgspec.Struct, frozen=True, gc=False):
    """``attendee``: ``type`` is ``required|optional|resource``."""

    email_address: ReadEmail | None = field(default=None, name="emailAddress")
    type: str | None = None
    status: ReadResponse | None = None


class ReadBody(msgspec.Struct, frozen=True, gc=False):
    """``itemBody``."""

    content_type: str | None = field(default=None, name="contentType")
    content: str | None = None


class ReadLocation(msgspec.Struct, frozen=True, gc=False):
    """``location`` (only the display name is read)."""

    display_name: str | None = field(default=None, name="displayName")


class ReadEvent(msgspec.Struct, frozen=True):
    """``event`` as read (``isAllDay`` and ``isCancelled`` absent or null mean false)."""

    id: str
    change_key: str | None = field(default=None, name="changeKey")
    ical_uid: str | None = field(default=None, name="iCalUId")
    subject: str | None = None
    body: ReadBody | None = None
    start: ReadDateTime | None = None
    end: ReadDateTime | None = None
    original_start: str | None = field(default=None, name="originalStart")
    original_start_time_zone: str | None = field(default=None, name="originalStartTimeZone")
    is_all_day: bool | None = field(default=None, name="isAllDay")
    is_cancelled: bool | None = field(default=None, name="isCancelled")
    show_as: str | None = field(default=None, name="showAs")
    sensitivity: str | None = None
    type: str | None = None
    series_master_id: str | None = field(default=None, name="seriesMasterId")
    recurrence: dict[str, Any] | None = None
    attendees: list[ReadAttendee] | None = None
    organizer: ReadRecipient | None = None
    location: ReadLocation | None = None
    created_date_time: str | None = field(default=None, name="createdDateTime")
    last_modified_date_time: str | None = field(default=None, name="lastModifiedDateTime")


def event_struct(data: Any) -> ReadEvent:
    """One decoded Graph event (a dict) as a :class:`ReadEvent`; anything else raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    try:
        return msgspec.convert(data, ReadEvent)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ProviderResponseError(
            f"Graph sent an unreadable event: {exc}", provider=PROVIDER
        ) from None
