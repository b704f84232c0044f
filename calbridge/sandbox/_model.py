"""The sandbox world's values: users, native calendars, native events and changes.

These are the *native* truth (what Google or Microsoft hold). Provider sandboxes render
them in their own wire format; none of these types is a wire format.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ..models import (
    Attendee,
    EventStatus,
    EventTime,
    Person,
    Transparency,
    Visibility,
)

if TYPE_CHECKING:
    from ._recurrence import Occurrence

__all__ = [
    "ChangeKind",
    "NativeCalendar",
    "NativeChange",
    "NativeEvent",
    "NativeProvider",
    "User",
]

#: the provider that holds a user's calendars natively
NativeProvider = Literal["google", "microsoft"]


def _props(value: Mapping[str, str]) -> Mapping[str, str]:
    out = dict(value)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("extended properties map str keys to str values")
    return out


@attrs.frozen(kw_only=True)
class User:
    """A test user of the world (one mailbox at their native provider)."""

    email: str
    native: NativeProvider = "google"
    name: str | None = None
    #: IANA zone of the user's settings (default zone of new calendars)
    time_zone: str = "UTC"
    #: native-provider user id (Google profile id / Graph user id)
    id: str = ""


@attrs.frozen(kw_only=True)
class NativeCalendar:
    """One calendar as the native provider holds it."""

    id: str
    owner: str  #: the owning user's email
    name: str
    primary: bool = False
    read_only: bool = False
    time_zone: str = "UTC"
    deleted: bool = False


class ChangeKind(enum.StrEnum):
    """What a :class:`NativeChange` did."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@attrs.frozen(kw_only=True)
class NativeEvent:
    """One native event (a single event, a series master, or an exception of a series).

    ``version`` grows on every write and ``etag`` is derived from it; ``sequence`` is the
    calendar's change sequence number of the last write (tombstones keep theirs), so a
    view can answer "what changed after N" for sync tokens, delta links or
    ``last_modified`` reads.
    """

    id: str
    calendar_id: str
    ical_uid: str
    start: EventTime
    end: EventTime
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    #: RRULE/EXDATE/RDATE/EXRULE lines of a series master (no DTSTART)
    recurrence: tuple[str, ...] = ()
    #: for an exception: the master's native id and the occurrence's original start
    recurring_event_id: str | None = None
    original_start: EventTime | None = None
    status: EventStatus = EventStatus.CONFIRMED
    transparency: Transparency = Transparency.OPAQUE
    visibility: Visibility = Visibility.DEFAULT
    attendees: tuple[Attendee, ...] = ()
    organizer: Person | None = None
    created: dt.datetime
    updated: dt.datetime
    version: int = 1
    sequence: int = 0
    #: Google ``extendedProperties.private`` (this calendar's copy only)
    private_properties: Mapping[str, str] = attrs.field(factory=dict, converter=_props, hash=False)
    #: Google ``extendedProperties.shared`` (every attendee's copy)
    shared_properties: Mapping[str, str] = attrs.field(factory=dict, converter=_props, hash=False)
    #: a deleted event kept as a tombstone
    deleted: bool = False
    #: who wrote last: ``"native"`` (the user, behind every app's back) or a view's tag
    origin: str = "native"

    @property
    def etag(self) -> str:
        """A quoted version string, changing on every write."""
        return f'"{self.version:016d}"'

    @functools.cached_property
    def start_utc(self) -> dt.datetime:
        """``start.as_utc()``, computed once (views filter and sort on it often)."""
        return self.start.as_utc()

    @functools.cached_property
    def end_utc(self) -> dt.datetime:
        """``end.as_utc()``, computed once."""
        return self.end.as_utc()

    @functools.cached_property
    def single_occurrence(self) -> Occurrence:
        """This event as the one occurrence of a single event (built once, then shared)."""
        from ._recurrence import Occurrence

        return Occurrence(event=self, start=self.start, end=self.end, instance_id=self.id)

    @property
    def is_master(self) -> bool:
        """True for the definition of a recurring series."""
        return bool(self.recurrence)

    def occurrence_fields(self) -> dict[str, Any]:
        """What an occurrence of this series starts with when it becomes an exception: the
        series' text, people, visibility and properties (times and status are its own)."""
        return {
            "summary": self.summary,
            "description": self.description,
            "location": self.location,
            "transparency": self.transparency,
            "visibility": self.visibility,
            "attendees": self.attendees,
            "organizer": self.organizer,
            "private_properties": self.private_properties,
            "shared_properties": self.shared_properties,
        }

    @property
    def is_exception(self) -> bool:
        """True for a moved, edited or cancelled occurrence of a series."""
        return self.recurring_event_id is not None


@attrs.frozen(kw_only=True)
class NativeChange:
    """What listeners receive after every native write."""

    kind: ChangeKind
    user: str  #: the calendar owner's email
    calendar_id: str
    event: NativeEvent  #: the event after the write (a tombstone for deletions)
    sequence: int
    origin: str
    at: dt.datetime
