"""The wire model of Cronofy's Read Events pages, decoded straight from bytes by msgspec.

Reading events is the hot path (every event of every page), so its wire model is a set of
``msgspec.Struct`` classes: msgspec decodes a page's JSON text into them in C, without
building a dict per object first. A page decodes in two steps: :func:`decode_page` reads
``pages`` and keeps each event as its own JSON text (``msgspec.Raw``), so the next page can
be requested before any event is converted; :func:`decode_event` then reads one event.
The event's text becomes :attr:`calbridge.Event.raw` (a :class:`calbridge.RawPayload`,
decoded only if the application looks).

Field names are Cronofy's JSON keys; keys not listed here are ignored (Cronofy adds fields
over time) and stay available in ``raw``. Types are loose where Cronofy's are (``null``
accepted wherever a value may be missing).
"""

from __future__ import annotations

from typing import Any

import msgspec

from calbridge.errors import ProviderResponseError

__all__ = [
    "EventsPage",
    "PagesInfo",
    "ReadEvent",
    "ReadPerson",
    "ReadPlace",
    "ReadTime",
    "decode_event",
    "decode_page",
    "event_struct",
]

PROVIDER = "cronofy"


class ReadTime(msgspec.Struct, frozen=True, gc=False):
    """A localized start/end: ``{"time": "2026-01-05T09:00:00Z", "tzid": "Europe/London"}``."""

    time: str
    tzid: str | None = None


class ReadPlace(msgspec.Struct, frozen=True, gc=False):
    """``location`` (its ``lat``/``long`` stay in ``raw``)."""

    description: str | None = None


class ReadPerson(msgspec.Struct, frozen=True, gc=False):
    """``organizer`` or one of ``attendees`` (organizers have no ``status``)."""

    email: str | None = None
    display_name: str | None = None
    status: str | None = None


class ReadEvent(msgspec.Struct, frozen=True, gc=False):
    """One event of ``GET /v1/events``.

    ``event_uid`` is on every event; ``event_id`` only on the app's own (managed) events.
    ``start``/``end`` are ``"YYYY-MM-DD"`` (all-day), UTC text, or a :class:`ReadTime`.
    Only the fields the conversion reads are listed: each one listed costs decoding time
    on every event (``participation_status``, ``google_event_id`` and the rest stay in
    ``raw``).
    """

    calendar_id: str
    event_uid: str
    start: str | ReadTime
    end: str | ReadTime
    event_id: str | None = None
    summary: str | None = None
    description: str | None = None
    deleted: bool | None = None
    created: str | None = None
    updated: str | None = None
    location: ReadPlace | None = None
    #: a tuple, so a whole list can key the conversion's interning
    attendees: tuple[ReadPerson, ...] | None = None
    organizer: ReadPerson | None = None
    transparency: str | None = None
    status: str | None = None
    recurring: bool | None = None
    series_identifier: str | None = None
    event_private: bool | None = None
    ical_uid: str | None = None


class PagesInfo(msgspec.Struct, frozen=True, gc=False):
    """``pages``: ``next_page`` is absolute, and absent or empty on the last page."""

    current: int = 1
    total: int = 1
    next_page: str | None = None


class EventsPage(msgspec.Struct, frozen=True):
    """A Read Events page: ``pages`` plus each event's JSON text, not yet decoded."""

    events: list[msgspec.Raw]
    pages: PagesInfo = PagesInfo()


_page_decoder = msgspec.json.Decoder(EventsPage)
_event_decoder = msgspec.json.Decoder(ReadEvent)


def _unreadable(what: str, exc: Exception) -> ProviderResponseError:
    return ProviderResponseError(f"unreadable {what} ({exc})", provider=PROVIDER)


def decode_page(content: bytes) -> EventsPage:
    """One Read Events page from its bytes; anything else raises ProviderResponseError."""
    try:
        return _page_decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _unreadable("events page", exc) from None


def decode_event(text: msgspec.Raw | bytes) -> ReadEvent:
    """One event from its JSON text; unreadable input raises ProviderResponseError."""
    try:
        return _event_decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _unreadable("event", exc) from None


def event_struct(data: Any) -> ReadEvent:
    """A :class:`ReadEvent` from already-decoded JSON (a dict), with the same checks."""
    try:
        return msgspec.convert(data, ReadEvent)
    except (msgspec.ValidationError, TypeError) as exc:
        raise _unreadable("event", exc) from None
