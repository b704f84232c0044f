"""The wire model of the events Google sends back, read by msgspec (the read hot path).

Every event of every ``events.list`` page goes through here. Structuring each one through
cattrs (:data:`._wire.WIRE`) cost about 15 µs per event; ``msgspec.convert`` reads the same
decoded JSON into these frozen structs in C, in about 2. Attribute names are those of
:class:`._wire.GEvent` (Python style), each JSON key given as the field's ``name``; the
conversion reads only these fields and keeps the whole object as ``Event.raw``. Writes
still go through the attrs model (:mod:`._wire`), which also builds request bodies.

Unknown keys are ignored (Google adds fields); a field of the wrong type is a
:class:`~calbridge.errors.ProviderResponseError`, as with cattrs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import field

from calbridge.errors import ProviderResponseError

__all__ = [
    "ReadAttendee",
    "ReadDateTime",
    "ReadEvent",
    "ReadExtendedProperties",
    "ReadPerson",
    "event_struct",
]

PROVIDER = "google"


class ReadDateTime(msgspec.Struct, frozen=True, gc=False):
    """``EventDateTime``: ``date`` for all-day, else ``dateTime`` (+ IANA ``timeZone``)."""

    date: str | None = None
    date_time: str | None = field(default=None, name="dateTime")
    time_zone: str | None = field(default=None, name="timeZone")


class ReadPerson(msgspec.Struct, frozen=True, gc=False):
    """``organizer`` / ``creator``."""

    email: str | None = None
    display_name: str | None = field(default=None, name="displayName")


class ReadAttendee(msgspec.Struct, frozen=True, gc=False):
    """One entry of ``attendees``."""

    email: str | None = None
    display_name: str | None = field(default=None, name="displayName")
    optional: bool | None = None
    organizer: bool | None = None
    resource: bool | None = None
    response_status: str | None = field(default=None, name="responseStatus")


class ReadExtendedProperties(msgspec.Struct, frozen=True):
    """``extendedProperties``: per-copy ``private`` and all-copies ``shared`` maps."""

    private: dict[str, str] | None = None
    shared: dict[str, str] | None = None


class ReadEvent(msgspec.Struct, frozen=True):
    """``calendar#event`` as read. A tombstone may carry only ``id`` (and ``status``)."""

    id: str | None = None
    etag: str | None = None
    status: str | None = None
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    i_cal_uid: str | None = field(default=None, name="iCalUID")
    start: ReadDateTime | None = None
    end: ReadDateTime | None = None
    recurrence: list[str] | None = None
    recurring_event_id: str | None = field(default=None, name="recurringEventId")
    original_start_time: ReadDateTime | None = field(default=None, name="originalStartTime")
    transparency: str | None = None
    visibility: str | None = None
    attendees: list[ReadAttendee] | None = None
    organizer: ReadPerson | None = None
    created: str | None = None
    updated: str | None = None
    extended_properties: ReadExtendedProperties | None = field(
        default=None, name="extendedProperties"
    )


def event_struct(data: Any) -> ReadEvent:
    """One decoded Google event (a dict) as a :class:`ReadEvent`; anything else raises
    :class:`~calbridge.errors.ProviderResponseError`."""
    try:
        return msgspec.convert(data, ReadEvent)
    except (msgspec.ValidationError, TypeError) as exc:
        raise ProviderResponseError(
            f"unreadable GEvent from Google: {exc}", provider=PROVIDER
        ) from None
