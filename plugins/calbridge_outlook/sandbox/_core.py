"""The Graph sandbox's core: the view state over the world, errors, event lookup, writes."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import uuid
from typing import Any

import attrs
from starlette.responses import JSONResponse

from calbridge import EventStatus
from calbridge.sandbox import (
    GrantServer,
    NativeEvent,
    Occurrence,
    PageTokens,
    UnknownCalendar,
    UnknownEvent,
    User,
    World,
    expand,
)

from ._render import event_json
from ._state import (
    GRAPH_TOKENS,
    DeltaRound,
    DeltaState,
    GraphSettings,
    Overlay,
    SandboxSubscription,
)

__all__ = ["PROVIDER", "Found", "GraphError", "GraphView", "error_body", "view_for"]

#: the sandbox's name (mount path, fault key, delivery provider)
PROVIDER = "graph"
_SUFFIX = re.compile(r"^\d{8}(T\d{6}Z)?$")


def _skip_token() -> str:
    return secrets.token_urlsafe(24)


def error_body(code: str, message: str, now: dt.datetime) -> dict[str, Any]:
    """Graph's error envelope."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now.strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


class GraphError(Exception):
    """An error answer in Graph's envelope."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self, now: dt.datetime) -> JSONResponse:
        """The error as a response."""
        return JSONResponse(
            error_body(self.code, self.message, now), status_code=self.status, headers=self.headers
        )


def not_found(what: str = "The specified object was not found in the store.") -> GraphError:
    """404 ErrorItemNotFound."""
    return GraphError(404, "ErrorItemNotFound", what)


@attrs.frozen(kw_only=True)
class Found:
    """An event id resolved for a mailbox."""

    calendar_id: str
    #: the native event (a single, a master, or an exception)
    event: NativeEvent
    #: set for a plain occurrence of a series (``event`` is then its master)
    occurrence: Occurrence | None = None


@attrs.define(eq=False)
class GraphView:
    """Microsoft's state beside the world (``world.views["graph"]``)."""

    world: World
    settings: GraphSettings = attrs.field(factory=GraphSettings)
    tenant_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    #: OAuth codes, grants and tokens (refresh tokens are single-use: each refresh
    #: rotates them)
    oauth: GrantServer = attrs.field(
        default=attrs.Factory(
            lambda self: GrantServer(
                self.world.clock.timestamp, tokens=GRAPH_TOKENS, rotate_refresh_tokens=True
            ),
            takes_self=True,
        )
    )
    overlays: dict[str, Overlay] = attrs.field(factory=dict)
    #: (calendar id, transactionId) -> event id
    transactions: dict[tuple[str, str], str] = attrs.field(factory=dict)
    deltas: dict[str, DeltaState] = attrs.field(factory=dict)
    #: ``$skiptoken`` -> the delta round and the page it continues with
    rounds: PageTokens[tuple[DeltaRound, int]] = attrs.field(
        default=attrs.Factory(
            lambda self: PageTokens(self.world.clock.timestamp, token=_skip_token),
            takes_self=True,
        )
    )
    #: delta tokens evicted on purpose (answered 410 with a Location reset)
    evicted: dict[str, DeltaState] = attrs.field(factory=dict)
    subscriptions: dict[str, SandboxSubscription] = attrs.field(factory=dict)
    lock: threading.RLock = attrs.field(factory=threading.RLock)

    def now(self) -> dt.datetime:
        """The sandbox clock."""
        return self.world.clock.now()

    # -- mailboxes and calendars ---------------------------------------------------------

    def mailbox(self, user: User, key: str) -> User:
        """The mailbox ``/users/{key}`` names (only the caller's own is visible)."""
        if key.lower() in (user.email, user.id.lower()):
            return user
        raise GraphError(
            403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
        )

    def calendar_of(self, user: User, calendar_id: str | None) -> str:
        """A calendar id of the mailbox (None = the default calendar)."""
        if calendar_id is None:
            return self.world.primary_calendar(user.email).id
        try:
            cal = self.world.calendar(calendar_id)
        except UnknownCalendar:
            raise not_found() from None
        if cal.owner != user.email or cal.deleted:
            raise not_found()
        return cal.id

    # -- events --------------------------------------------------------------------------

    def find(self, user: User, event_id: str) -> Found:
        """Resolve an event id (single, master, exception or occurrence) in the mailbox."""
        cals = [c.id for c in self.world.calendars(user.email)]
        for cid in cals:
            try:
                ev = self.world.event(cid, event_id)
            except UnknownEvent:
                continue
            if ev.is_exception and ev.status is EventStatus.CANCELLED:
                raise not_found()
            return Found(calendar_id=cid, event=ev)
        master_id, _, suffix = event_id.rpartition("_")
        if not master_id or not _SUFFIX.match(suffix):
            raise not_found()
        for cid in cals:
            try:
                master = self.world.event(cid, master_id)
            except UnknownEvent:
                continue
            if not master.is_master:
                break
            orig = _suffix_time(suffix)
            family = [
                master,
                *(e for e in self.world.events(cid) if e.recurring_event_id == master.id),
            ]
            span = master.end.as_utc() - master.start.as_utc()
            for occ in expand(
                family, orig - dt.timedelta(days=1), orig + span + dt.timedelta(days=1)
            ):
                if occ.instance_id == event_id and occ.event.id == master.id:
                    return Found(calendar_id=cid, event=master, occurrence=occ)
        raise not_found()

    def render(
        self,
        user: User,
        found: Found,
        prefer: str,
        *,
        expand_properties: bool = False,
    ) -> dict[str, Any]:
        """One event as Graph JSON."""
        return event_json(
            event=found.event,
            user=user,
            prefer=prefer,
            overlay=self.overlays.get(found.event.id),
            occurrence=found.occurrence,
            expand_properties=expand_properties,
        )

    def render_occurrence(
        self, user: User, occ: Occurrence, prefer: str, *, expand_properties: bool = False
    ) -> dict[str, Any]:
        """A calendarView item (single, occurrence or exception)."""
        return event_json(
            event=occ.event,
            user=user,
            prefer=prefer,
            overlay=self.overlays.get(occ.event.id),
            occurrence=occ if occ.original_start is not None else None,
            expand_properties=expand_properties,
        )

    def occurrences(
        self, calendar_id: str, start: dt.datetime, end: dt.datetime
    ) -> list[Occurrence]:
        """calendarView semantics: singles, occurrences and exceptions in the window."""
        return expand(self.world.events(calendar_id), start, end)

    def set_overlay(self, event_id: str, overlay: Overlay) -> None:
        """Remember Graph-only values written for an event."""
        with self.lock:
            old = self.overlays.get(event_id, Overlay())
            self.overlays[event_id] = Overlay(
                show_as=overlay.show_as or old.show_as,
                sensitivity=overlay.sensitivity or old.sensitivity,
            )

    def make_exception(
        self, found: Found, fields: dict[str, Any], *, cancel: bool = False
    ) -> NativeEvent:
        """Turn a plain occurrence into an exception (edited or, with ``cancel``, deleted)."""
        occ = found.occurrence
        assert occ is not None
        assert occ.original_start is not None
        master = found.event
        base: dict[str, Any] = {
            **master.occurrence_fields(),
            "start": occ.start,
            "end": occ.end,
        }
        base.update({k: v for k, v in fields.items() if k != "recurrence"})
        if cancel:
            base["status"] = EventStatus.CANCELLED
        return self.world.insert_event(
            found.calendar_id,
            id=occ.instance_id,
            ical_uid=master.ical_uid,
            recurring_event_id=master.id,
            original_start=occ.original_start,
            origin=PROVIDER,
            **base,
        )


def _suffix_time(suffix: str) -> dt.datetime:
    if "T" in suffix:
        return dt.datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return dt.datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=dt.UTC)


def view_for(world: World) -> GraphView:
    """The world's Graph view state (created on first use)."""
    view = world.views.get(PROVIDER)
    if not isinstance(view, GraphView):
        view = GraphView(world)
        world.views[PROVIDER] = view
    return view
