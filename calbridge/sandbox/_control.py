"""Control endpoints (``/_sandbox/...``): act behind the app's back, drive the clock, faults."""

from __future__ import annotations

import collections
import datetime as dt
import json
import time
import weakref
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..models import (
    Attendee,
    EventStatus,
    EventTime,
    ResponseStatus,
    Transparency,
    Visibility,
)
from ._faults import FAULT_ACTIONS, mount_path
from ._model import NativeCalendar, NativeEvent, User
from ._world import UnknownCalendar, UnknownEvent, UnknownUser, World

__all__ = [
    "RequestCounts",
    "control_routes",
    "counting",
    "event_time_from_json",
    "event_time_json",
    "native_event_json",
    "request_counts",
]


@attrs.define
class RequestCounts:
    """What one provider sandbox answered (read by benchmarks through ``/_sandbox/requests``).

    ``requests``: every request of the provider's API and OAuth endpoints it answered;
    ``limited``: those counted against the application's rate limit (authenticated API
    calls); ``throttled``: those its rate limiter refused with 429 (an injected 429 fault
    is counted in ``statuses`` only); ``statuses``: answers by status code.
    """

    requests: int = 0
    limited: int = 0
    throttled: int = 0
    statuses: collections.Counter[int] = attrs.field(factory=collections.Counter)
    started: float = attrs.field(factory=time.time)

    def answered(self, status: int) -> None:
        """One answer sent."""
        self.requests += 1
        self.statuses[status] += 1

    def reset(self) -> None:
        """Start counting again from zero (in place: the sandbox keeps this object)."""
        self.requests = self.limited = self.throttled = 0
        self.statuses.clear()
        self.started = time.time()

    def json(self) -> dict[str, Any]:
        """The counts as control-endpoint JSON (``since``: epoch seconds of the last reset)."""
        return {
            "requests": self.requests,
            "limited": self.limited,
            "throttled": self.throttled,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "since": self.started,
        }


_COUNTS: weakref.WeakKeyDictionary[World, dict[str, RequestCounts]] = weakref.WeakKeyDictionary()


def request_counts(world: World, provider: str) -> RequestCounts:
    """The request counts of ``provider``'s sandbox over ``world`` (created on first use)."""
    per_world = _COUNTS.setdefault(world, {})
    counts = per_world.get(provider)
    if counts is None:
        counts = per_world[provider] = RequestCounts()
    return counts


def counting(
    app: ASGIApp, counts: RequestCounts, *, skip: tuple[str, ...] = ("/_sandbox", "/_control")
) -> ASGIApp:
    """``app`` with every answer counted in ``counts.requests`` / ``counts.statuses``
    (paths under ``skip``, relative to the mount, are control endpoints: not counted).

    A sandbox counts ``limited`` (calls the provider counts against the application's
    quota) and ``throttled`` (its own 429s) itself, where it authenticates and limits.
    """

    async def counted_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if mount_path(scope).startswith(skip):
            await app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts.answered(int(message["status"]))
            await send(message)

        await app(scope, receive, sending)

    return counted_app


def event_time_json(t: EventTime) -> dict[str, str]:
    """``{"date": ...}``, ``{"floating": ...}`` or ``{"time": ..., "tzid": ...}``."""
    if t.date is not None:
        return {"date": t.date.isoformat()}
    assert t.datetime is not None
    if t.tzid is None:
        return {"floating": t.datetime.isoformat()}
    return {"time": t.datetime.isoformat(), "tzid": t.tzid}


def event_time_from_json(value: Any, default_tzid: str = "UTC") -> EventTime:
    """Parse ``"2026-01-05"`` (all-day), an ISO datetime with offset (zoned), or the dict
    forms of :func:`event_time_json`."""
    if isinstance(value, str):
        if len(value) == 10:
            return EventTime.all_day(dt.date.fromisoformat(value))
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if when.tzinfo is None:
            return EventTime.floating(when)
        return EventTime.zoned(when, default_tzid)
    if isinstance(value, dict):
        if "date" in value:
            return EventTime.all_day(dt.date.fromisoformat(value["date"]))
        if "floating" in value:
            return EventTime.floating(dt.datetime.fromisoformat(value["floating"]))
        when = dt.datetime.fromisoformat(str(value["time"]).replace("Z", "+00:00"))
        tzid = str(value.get("tzid") or default_tzid)
        if when.tzinfo is None:
            from zoneinfo import ZoneInfo

            when = when.replace(tzinfo=ZoneInfo(tzid))
        return EventTime.zoned(when, tzid)
    raise ValueError(f"not an event time: {value!r}")


def native_event_json(e: NativeEvent) -> dict[str, Any]:
    """A native event as control-endpoint JSON."""
    return {
        "id": e.id,
        "calendar_id": e.calendar_id,
        "ical_uid": e.ical_uid,
        "summary": e.summary,
        "description": e.description,
        "location": e.location,
        "start": event_time_json(e.start),
        "end": event_time_json(e.end),
        "recurrence": list(e.recurrence),
        "recurring_event_id": e.recurring_event_id,
        "original_start": event_time_json(e.original_start) if e.original_start else None,
        "status": e.status.value,
        "transparency": e.transparency.value,
        "visibility": e.visibility.value,
        "attendees": [
            {"email": a.email, "name": a.name, "response": a.response.value} for a in e.attendees
        ],
        "organizer": {"email": e.organizer.email, "name": e.organizer.name}
        if e.organizer
        else None,
        "created": e.created.isoformat(),
        "updated": e.updated.isoformat(),
        "etag": e.etag,
        "version": e.version,
        "sequence": e.sequence,
        "private_properties": dict(e.private_properties),
        "shared_properties": dict(e.shared_properties),
        "deleted": e.deleted,
        "origin": e.origin,
    }


def _calendar_json(c: NativeCalendar) -> dict[str, Any]:
    return {
        "id": c.id,
        "owner": c.owner,
        "name": c.name,
        "primary": c.primary,
        "read_only": c.read_only,
        "time_zone": c.time_zone,
    }


def _user_json(world: World, u: User) -> dict[str, Any]:
    return {
        "email": u.email,
        "native": u.native,
        "name": u.name,
        "time_zone": u.time_zone,
        "id": u.id,
        "calendars": [_calendar_json(c) for c in world.calendars(u.email)],
    }


def _event_fields(body: dict[str, Any], default_tzid: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("summary", "description", "location"):
        if name in body:
            out[name] = body[name]
    for name in ("start", "end"):
        if name in body:
            out[name] = event_time_from_json(body[name], default_tzid)
    if "recurrence" in body:
        out["recurrence"] = tuple(body["recurrence"])
    if "status" in body:
        out["status"] = EventStatus(body["status"])
    if "transparency" in body:
        out["transparency"] = Transparency(body["transparency"])
    if "visibility" in body:
        out["visibility"] = Visibility(body["visibility"])
    if "attendees" in body:
        out["attendees"] = tuple(
            Attendee(
                email=a["email"],
                name=a.get("name"),
                response=ResponseStatus(a.get("response", "needs_action")),
            )
            for a in body["attendees"]
        )
    for name in ("private_properties", "shared_properties"):
        if name in body:
            out[name] = {str(k): str(v) for k, v in body[name].items()}
    return out


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def control_routes(world: World, providers: list[str]) -> list[Route]:
    """The ``/_sandbox`` routes for ``world`` (mounted by :func:`build_app`)."""

    async def index(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "providers": {name: f"{base}/{name}" for name in providers},
                "now": world.clock.now().isoformat(),
                "realtime": world.clock.is_realtime,
            }
        )

    async def users(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"users": [_user_json(world, u) for u in world.users()]})
        body = await _body(request)
        user = world.add_user(
            body["email"],
            native=body.get("native", "google"),
            name=body.get("name"),
            time_zone=body.get("time_zone", "UTC"),
        )
        return JSONResponse(_user_json(world, user), status_code=201)

    async def calendars(request: Request) -> Response:
        email = request.path_params["email"]
        if request.method == "GET":
            return JSONResponse({"calendars": [_calendar_json(c) for c in world.calendars(email)]})
        body = await _body(request)
        cal = world.add_calendar(
            email,
            body["name"],
            read_only=bool(body.get("read_only", False)),
            time_zone=body.get("time_zone"),
        )
        return JSONResponse(_calendar_json(cal), status_code=201)

    async def events(request: Request) -> Response:
        cid = request.path_params["calendar_id"]
        if request.method == "GET":
            deleted = request.query_params.get("include_deleted", "").lower() == "true"
            return JSONResponse(
                {
                    "events": [
                        native_event_json(e) for e in world.events(cid, include_deleted=deleted)
                    ]
                }
            )
        body = await _body(request)
        tz = world.calendar(cid).time_zone
        fields = _event_fields(body, tz)
        for key in ("id", "ical_uid", "recurring_event_id"):
            if key in body:
                fields[key] = body[key]
        if "original_start" in body:
            fields["original_start"] = event_time_from_json(body["original_start"], tz)
        event = world.insert_event(cid, **fields)
        return JSONResponse(native_event_json(event), status_code=201)

    async def event(request: Request) -> Response:
        cid = request.path_params["calendar_id"]
        eid = request.path_params["event_id"]
        if request.method == "GET":
            return JSONResponse(native_event_json(world.event(cid, eid, include_deleted=True)))
        if request.method == "DELETE":
            world.delete_event(cid, eid)
            return Response(status_code=204)
        body = await _body(request)
        updated = world.update_event(cid, eid, **_event_fields(body, world.calendar(cid).time_zone))
        return JSONResponse(native_event_json(updated))

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            await world.clock.advance(float(body.get("seconds", 0)))
        return JSONResponse(
            {"now": world.clock.now().isoformat(), "realtime": world.clock.is_realtime}
        )

    async def faults(request: Request) -> Response:
        provider = request.path_params.get("provider")
        if request.method == "DELETE":
            world.faults.clear(provider)
            return Response(status_code=204)
        assert provider is not None
        body = await _body(request)
        if "latency" in body:
            world.faults.set_latency(provider, float(body["latency"]))
        if "status" in body:
            world.faults.fail_next(
                provider,
                int(body["status"]),
                times=int(body.get("times", 1)),
                path_prefix=str(body.get("path_prefix", "")),
                retry_after=body.get("retry_after"),
            )
        if "drop_notifications" in body:
            world.faults.drop_notifications(provider, int(body["drop_notifications"]))
        if "duplicate_notifications" in body:
            world.faults.duplicate_notifications(provider, int(body["duplicate_notifications"]))
        if "action" in body:
            if body["action"] not in FAULT_ACTIONS:
                return _error(400, f"unknown action; known: {', '.join(FAULT_ACTIONS)}")
            try:
                world.faults.trigger(provider, str(body["action"]), str(body["email"]))
            except LookupError as exc:
                return _error(404, str(exc))
        return Response(status_code=204)

    async def deliveries(request: Request) -> Response:
        return JSONResponse(
            {
                "deliveries": [
                    {
                        "delivery_id": a.delivery_id,
                        "provider": a.provider,
                        "url": a.url,
                        "attempt": a.attempt,
                        "at": a.at.isoformat(),
                        "ok": a.ok,
                        "status": a.status,
                        "error": a.error,
                        "final": a.final,
                        "body": a.body.decode("utf-8", "replace"),
                    }
                    for a in list(world.delivery.attempts)
                ]
            }
        )

    async def requests(request: Request) -> Response:
        """Per provider: requests answered, counted against the rate limit, throttled."""
        per_world = _COUNTS.setdefault(world, {})
        if request.method == "DELETE":
            for counts in per_world.values():
                counts.reset()
            return Response(status_code=204)
        return JSONResponse(
            {"providers": {name: c.json() for name, c in sorted(per_world.items())}}
        )

    def guarded(handler: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            try:
                response: Response = await handler(request)
            except (UnknownUser, UnknownCalendar, UnknownEvent) as exc:
                return _error(404, f"{type(exc).__name__}: {exc.args[0]}")
            except (ValueError, TypeError, KeyError) as exc:
                return _error(400, f"{type(exc).__name__}: {exc}")
            return response

        return wrapper

    return [
        Route("/", guarded(index), methods=["GET"]),
        Route("/users", guarded(users), methods=["GET", "POST"]),
        Route("/users/{email}/calendars", guarded(calendars), methods=["GET", "POST"]),
        Route("/calendars/{calendar_id}/events", guarded(events), methods=["GET", "POST"]),
        Route(
            "/calendars/{calendar_id}/events/{event_id}",
            guarded(event),
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route("/clock", guarded(clock), methods=["GET", "POST"]),
        Route("/faults", guarded(faults), methods=["DELETE"]),
        Route("/faults/{provider}", guarded(faults), methods=["POST", "DELETE"]),
        Route("/deliveries", guarded(deliveries), methods=["GET"]),
        Route("/requests", guarded(requests), methods=["GET", "DELETE"]),
    ]
