"""The sandbox world: the in-memory truth of every test user's native calendars."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import httpx

from ..models import Attendee, EventStatus, EventTime, Person, Secret, Transparency, Visibility
from ._clock import Clock
from ._delivery import WebhookDelivery
from ._faults import Faults
from ._model import ChangeKind, NativeCalendar, NativeChange, NativeEvent, NativeProvider, User

__all__ = ["NativeListener", "UnknownCalendar", "UnknownEvent", "UnknownUser", "World"]

#: a view's subscription to native changes
NativeListener = Callable[[NativeChange], None]

#: fields :meth:`World.update_event` may change
_MUTABLE = frozenset(
    {
        "start",
        "end",
        "summary",
        "description",
        "location",
        "recurrence",
        "status",
        "transparency",
        "visibility",
        "attendees",
        "organizer",
        "private_properties",
        "shared_properties",
    }
)


class UnknownUser(KeyError):
    """No user with that email exists in the world."""


class UnknownCalendar(KeyError):
    """No calendar with that id exists in the world."""


class UnknownEvent(KeyError):
    """No live event with that id exists in the calendar."""


def _as_secret(value: str | Secret) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


def _google_id() -> str:
    # base32hex (a-v, 0-9), as Google's own ids
    return base64.b32hexencode(secrets.token_bytes(15)).decode().lower().rstrip("=")


def _graph_id() -> str:
    raw = base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")
    return "AAMk" + raw


@attrs.define
class _CalendarState:
    calendar: NativeCalendar
    events: dict[str, NativeEvent] = attrs.field(factory=dict)
    sequence: int = 0


class World:
    """Every test user's calendars, one clock, the faults and the webhook deliverer.

    Views (the provider sandboxes) read it and write it through these methods and learn
    of writes by :meth:`subscribe`. All methods are thread-safe.

    Args:
        clock: the sandbox clock (default: a manual clock, frozen until advanced).
        delivery_timeout: seconds a webhook receiver has to answer (Cronofy: 5).
        transport: an httpx transport for webhook delivery (e.g. ``httpx.ASGITransport``
            to deliver to an in-process receiver); default real HTTP.
        rate_limits: whether provider sandboxes answer 429 past their providers' limits.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        delivery_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limits: bool = True,
    ) -> None:
        self.clock = clock or Clock()
        #: whether provider sandboxes enforce their rate limits (off for benchmarks)
        self.rate_limits = rate_limits
        self.faults = Faults()
        self.delivery = WebhookDelivery(
            self.clock, self.faults, timeout=delivery_timeout, transport=transport
        )
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._calendars: dict[str, _CalendarState] = {}
        self._listeners: list[NativeListener] = []
        self._applications: dict[str, list[Secret]] = {}
        #: free-form per-view state (each provider sandbox keeps its own key here)
        self.views: dict[str, Any] = {}

    # -- OAuth applications (shared by every provider sandbox) ---------------------------

    def add_application(self, client_id: str, client_secret: str | Secret) -> None:
        """Register an OAuth client every provider sandbox accepts (replacing its secrets)."""
        with self._lock:
            self._applications[client_id] = [_as_secret(client_secret)]

    def rotate_application_secret(self, client_id: str, new_secret: str | Secret) -> None:
        """Start a secret rotation: ``new_secret`` becomes current, the old ones stay valid
        (Cronofy then signs notifications with every active secret, comma-separated)."""
        with self._lock:
            if client_id not in self._applications:
                raise KeyError(client_id)
            self._applications[client_id].insert(0, _as_secret(new_secret))

    def retire_previous_secrets(self, client_id: str) -> None:
        """End a rotation: only the current secret stays valid."""
        with self._lock:
            self._applications[client_id] = self._applications[client_id][:1]

    def application_secret(self, client_id: str) -> Secret | None:
        """The current client secret of ``client_id``, or None when unknown."""
        with self._lock:
            secrets_ = self._applications.get(client_id)
            return secrets_[0] if secrets_ else None

    def application_secrets(self, client_id: str) -> list[Secret]:
        """Every active secret of ``client_id``, current first (empty when unknown)."""
        with self._lock:
            return list(self._applications.get(client_id, ()))

    def check_application(self, client_id: str, client_secret: str | Secret) -> bool:
        """True when ``client_secret`` is an active secret of ``client_id`` (constant time)."""
        given = _as_secret(client_secret)
        found = False
        for secret in self.application_secrets(client_id):
            found |= secret == given
        return found

    def applications(self) -> list[str]:
        """Registered client ids."""
        with self._lock:
            return list(self._applications)

    # -- users and calendars -------------------------------------------------------------

    def add_user(
        self,
        email: str,
        *,
        native: NativeProvider = "google",
        name: str | None = None,
        time_zone: str = "UTC",
    ) -> User:
        """Create a user with a primary calendar (returns the existing user if known)."""
        if native not in ("google", "microsoft"):
            raise ValueError(f"native provider must be 'google' or 'microsoft', not {native!r}")
        key = email.lower()
        with self._lock:
            if key in self._users:
                return self._users[key]
            user = User(
                email=key,
                native=native,
                name=name or key.split("@")[0].replace(".", " ").title(),
                time_zone=time_zone,
                id=secrets.token_hex(10) if native == "google" else str(uuid.uuid4()),
            )
            self._users[key] = user
            primary_id = key if native == "google" else _graph_id()
            self._calendars[primary_id] = _CalendarState(
                NativeCalendar(
                    id=primary_id,
                    owner=key,
                    name=key if native == "google" else "Calendar",
                    primary=True,
                    time_zone=time_zone,
                )
            )
            return user

    def user(self, email: str) -> User:
        """The user with ``email`` (case-insensitive)."""
        with self._lock:
            try:
                return self._users[email.lower()]
            except KeyError:
                raise UnknownUser(email) from None

    def users(self) -> list[User]:
        """Every user, in creation order."""
        with self._lock:
            return list(self._users.values())

    def add_calendar(
        self,
        email: str,
        name: str,
        *,
        read_only: bool = False,
        time_zone: str | None = None,
    ) -> NativeCalendar:
        """Add a secondary calendar to a user."""
        user = self.user(email)
        cid = (
            f"{_google_id()}@group.calendar.google.com" if user.native == "google" else _graph_id()
        )
        cal = NativeCalendar(
            id=cid,
            owner=user.email,
            name=name,
            read_only=read_only,
            time_zone=time_zone or user.time_zone,
        )
        with self._lock:
            self._calendars[cid] = _CalendarState(cal)
        return cal

    def calendar(self, calendar_id: str) -> NativeCalendar:
        """One calendar by native id."""
        return self._state(calendar_id).calendar

    def primary_calendar(self, email: str) -> NativeCalendar:
        """The user's primary calendar."""
        return next(c for c in self.calendars(email) if c.primary)

    def calendars(self, email: str) -> list[NativeCalendar]:
        """The user's calendars (primary first)."""
        user = self.user(email)
        with self._lock:
            cals = [s.calendar for s in self._calendars.values() if s.calendar.owner == user.email]
        return sorted(cals, key=lambda c: not c.primary)

    def _state(self, calendar_id: str) -> _CalendarState:
        with self._lock:
            try:
                return self._calendars[calendar_id]
            except KeyError:
                raise UnknownCalendar(calendar_id) from None

    # -- events --------------------------------------------------------------------------

    def insert_event(
        self,
        calendar_id: str,
        *,
        start: EventTime,
        end: EventTime,
        summary: str | None = None,
        description: str | None = None,
        location: str | None = None,
        recurrence: Iterable[str] = (),
        recurring_event_id: str | None = None,
        original_start: EventTime | None = None,
        status: EventStatus = EventStatus.CONFIRMED,
        transparency: Transparency = Transparency.OPAQUE,
        visibility: Visibility = Visibility.DEFAULT,
        attendees: Iterable[Attendee] = (),
        organizer: Person | None = None,
        private_properties: Mapping[str, str] | None = None,
        shared_properties: Mapping[str, str] | None = None,
        id: str | None = None,
        ical_uid: str | None = None,
        origin: str = "native",
    ) -> NativeEvent:
        """Create a native event (``origin="native"`` = the user did it in their own client).

        ``id`` defaults to a provider-shaped id; ``ical_uid`` to a fresh one. A duplicate
        live ``id`` raises ``ValueError`` (Google answers 409 for that).
        """
        if start.is_all_day != end.is_all_day:
            raise ValueError("start and end must both be all-day or both be timed")
        state = self._state(calendar_id)
        user = self.user(state.calendar.owner)
        with self._lock:
            if id is None:
                id = _google_id() if user.native == "google" else _graph_id()
            existing = state.events.get(id)
            if existing is not None and not existing.deleted:
                raise ValueError(f"event id {id!r} already exists in {calendar_id!r}")
            now = self.clock.now()
            state.sequence += 1
            event = NativeEvent(
                id=id,
                calendar_id=calendar_id,
                ical_uid=ical_uid
                or (f"{_google_id()}@google.com" if user.native == "google" else _graph_id()),
                start=start,
                end=end,
                summary=summary,
                description=description,
                location=location,
                recurrence=tuple(recurrence),
                recurring_event_id=recurring_event_id,
                original_start=original_start,
                status=status,
                transparency=transparency,
                visibility=visibility,
                attendees=tuple(attendees),
                organizer=organizer or Person(email=user.email, name=user.name),
                created=now,
                updated=now,
                version=(existing.version + 1) if existing else 1,
                sequence=state.sequence,
                private_properties=private_properties or {},
                shared_properties=shared_properties or {},
                origin=origin,
            )
            state.events[id] = event
            change = NativeChange(
                kind=ChangeKind.CREATED,
                user=user.email,
                calendar_id=calendar_id,
                event=event,
                sequence=state.sequence,
                origin=origin,
                at=now,
            )
        self._emit(change)
        return event

    def update_event(
        self, calendar_id: str, event_id: str, *, origin: str = "native", **changes: Any
    ) -> NativeEvent:
        """Change fields of a live event (see ``NativeEvent`` for names); bumps its version."""
        unknown = set(changes) - _MUTABLE
        if unknown:
            raise TypeError(f"cannot update {sorted(unknown)}")
        for name in ("recurrence", "attendees"):
            if name in changes:
                changes[name] = tuple(changes[name])
        state = self._state(calendar_id)
        with self._lock:
            old = self._live(state, event_id)
            now = self.clock.now()
            state.sequence += 1
            event = attrs.evolve(
                old,
                updated=now,
                version=old.version + 1,
                sequence=state.sequence,
                origin=origin,
                **changes,
            )
            if event.start.is_all_day != event.end.is_all_day:
                raise ValueError("start and end must both be all-day or both be timed")
            state.events[event_id] = event
            change = NativeChange(
                kind=ChangeKind.UPDATED,
                user=state.calendar.owner,
                calendar_id=calendar_id,
                event=event,
                sequence=state.sequence,
                origin=origin,
                at=now,
            )
        self._emit(change)
        return event

    def delete_event(self, calendar_id: str, event_id: str, *, origin: str = "native") -> None:
        """Delete a live event, keeping a tombstone (and tombstoning its exceptions)."""
        state = self._state(calendar_id)
        emitted: list[NativeChange] = []
        with self._lock:
            old = self._live(state, event_id)
            victims = [old] + [
                e for e in state.events.values() if e.recurring_event_id == old.id and not e.deleted
            ]
            now = self.clock.now()
            for victim in victims:
                state.sequence += 1
                tomb = attrs.evolve(
                    victim,
                    deleted=True,
                    status=EventStatus.CANCELLED,
                    updated=now,
                    version=victim.version + 1,
                    sequence=state.sequence,
                    origin=origin,
                )
                state.events[victim.id] = tomb
                emitted.append(
                    NativeChange(
                        kind=ChangeKind.DELETED,
                        user=state.calendar.owner,
                        calendar_id=calendar_id,
                        event=tomb,
                        sequence=state.sequence,
                        origin=origin,
                        at=now,
                    )
                )
        for change in emitted:
            self._emit(change)

    def change_occurrence(
        self,
        calendar_id: str,
        master_id: str,
        original_start: EventTime,
        *,
        cancel: bool = False,
        origin: str = "native",
        **changes: Any,
    ) -> NativeEvent:
        """Move, edit (``changes``: ``start``, ``end``, ``summary``...) or ``cancel`` one
        occurrence of a live series, as a user does in their own client.

        The occurrence becomes an exception of the series (or its exception is updated):
        it keeps the series' iCalUID and, on a Google-native calendar, takes Google's
        instance id ``<masterId>_<original start>``; a cancelled one hides the occurrence.
        """
        master = self.event(calendar_id, master_id)
        if not master.is_master:
            raise ValueError(f"{master_id!r} is not a recurring series")
        if cancel:
            changes["status"] = EventStatus.CANCELLED
        key = original_start.as_utc()
        existing = next(
            (
                e
                for e in self.events(calendar_id)
                if e.recurring_event_id == master_id
                and e.original_start is not None
                and e.original_start.as_utc() == key
            ),
            None,
        )
        if existing is not None:
            return self.update_event(calendar_id, existing.id, origin=origin, **changes)
        length = master.end.as_utc() - master.start.as_utc()
        if original_start.is_all_day:
            assert original_start.date is not None
            assert master.end.date is not None
            assert master.start.date is not None
            end = EventTime.all_day(original_start.date + (master.end.date - master.start.date))
        else:
            end = EventTime.zoned(key + length, original_start.tzid or "UTC")
        native = self.user(self.calendar(calendar_id).owner).native
        suffix = (
            original_start.date.strftime("%Y%m%d")
            if original_start.date is not None
            else key.strftime("%Y%m%dT%H%M%SZ")
        )
        fields: dict[str, Any] = {
            **master.occurrence_fields(),
            "start": original_start,
            "end": end,
            **changes,
        }
        return self.insert_event(
            calendar_id,
            id=f"{master_id}_{suffix}" if native == "google" else None,
            ical_uid=master.ical_uid,
            recurring_event_id=master_id,
            original_start=original_start,
            origin=origin,
            **fields,
        )

    @staticmethod
    def _live(state: _CalendarState, event_id: str) -> NativeEvent:
        event = state.events.get(event_id)
        if event is None or event.deleted:
            raise UnknownEvent(event_id)
        return event

    def event(
        self, calendar_id: str, event_id: str, *, include_deleted: bool = False
    ) -> NativeEvent:
        """One event by native id (tombstones only with ``include_deleted``)."""
        state = self._state(calendar_id)
        with self._lock:
            event = state.events.get(event_id)
        if event is None or (event.deleted and not include_deleted):
            raise UnknownEvent(event_id)
        return event

    def find_by_ical_uid(self, calendar_id: str, ical_uid: str) -> list[NativeEvent]:
        """Live events of a calendar with this iCalUID (a master and its exceptions)."""
        return [e for e in self.events(calendar_id) if e.ical_uid == ical_uid]

    def events(self, calendar_id: str, *, include_deleted: bool = False) -> list[NativeEvent]:
        """Every event of a calendar, in change order (tombstones only if asked)."""
        state = self._state(calendar_id)
        with self._lock:
            events = list(state.events.values())
        return sorted(
            (e for e in events if include_deleted or not e.deleted), key=lambda e: e.sequence
        )

    def sequence(self, calendar_id: str) -> int:
        """The calendar's current change sequence number (0 before any write)."""
        return self._state(calendar_id).sequence

    def changes_since(self, calendar_id: str, sequence: int) -> list[NativeEvent]:
        """Events (tombstones included) whose last write came after ``sequence``."""
        return [e for e in self.events(calendar_id, include_deleted=True) if e.sequence > sequence]

    # -- listeners -----------------------------------------------------------------------

    def subscribe(self, listener: NativeListener) -> Callable[[], None]:
        """Call ``listener`` after every native write; returns an unsubscribe function.

        Listeners run synchronously on the writer's thread and must not block: schedule
        work on :attr:`clock` instead.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, change: NativeChange) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(change)

    # -- conveniences --------------------------------------------------------------------

    async def settle(self, seconds: float = 0.0) -> dt.datetime:
        """Advance the clock by ``seconds`` (default 0) running due timers; the new time."""
        return await self.clock.advance(seconds)
