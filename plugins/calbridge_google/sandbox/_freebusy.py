"""freeBusy.query of the Google sandbox: opaque, live occurrences merged into busy spans."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calbridge import EventStatus, Transparency
from calbridge.sandbox import NativeCalendar, UnknownCalendar, World, expand

from ._common import Ctx, read_json
from ._params import GoogleError, parse_rfc3339

__all__ = ["free_busy"]


async def free_busy(world: World, request: Request, ctx: Ctx) -> Response:
    """freeBusy.query: the merged busy spans of each calendar asked for."""
    body = await read_json(request)
    for key in ("timeMin", "timeMax"):
        if not body.get(key):
            raise GoogleError(status=400, reason="required", message=f"Missing {key}.")
    lo = parse_rfc3339(str(body["timeMin"]), "timeMin")
    hi = parse_rfc3339(str(body["timeMax"]), "timeMax")
    if lo >= hi:
        raise GoogleError(
            status=400,
            reason="timeRangeEmpty",
            domain="calendar",
            message="The specified time range is empty.",
        )
    items = body.get("items") or []
    if len(items) > 50:
        raise GoogleError(
            status=400,
            reason="tooManyCalendarsRequested",
            message="Too many calendars requested.",
        )
    calendars: dict[str, Any] = {}
    for item in items:
        cid = str(item.get("id", ""))
        try:
            cal = world.primary_calendar(ctx.email) if cid == "primary" else (world.calendar(cid))
        except (UnknownCalendar, StopIteration):
            calendars[cid] = {
                "errors": [{"domain": "global", "reason": "notFound"}],
                "busy": [],
            }
            continue
        calendars[cid] = {"busy": _busy(world, cal, lo, hi)}
    return JSONResponse(
        {
            "kind": "calendar#freeBusy",
            "timeMin": _z(lo),
            "timeMax": _z(hi),
            "calendars": calendars,
        }
    )


def _z(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _busy(
    world: World, cal: NativeCalendar, lo: dt.datetime, hi: dt.datetime
) -> list[dict[str, str]]:
    spans = sorted(
        (max(o.start.as_utc(), lo), min(o.end.as_utc(), hi))
        for o in expand(world.events(cal.id), lo, hi)
        if o.event.transparency is Transparency.OPAQUE
        and o.event.status is not EventStatus.CANCELLED
    )
    merged: list[list[dt.datetime]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [{"start": _z(s), "end": _z(e)} for s, e in merged]
