"""Watch channels (events.watch, channels.stop, notification delivery) and freeBusy."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calbridge import EventStatus, Transparency
from calbridge.sandbox import (
    ChangeKind,
    NativeCalendar,
    NativeChange,
    UnknownCalendar,
    World,
    expand,
)

from ._common import Ctx, read_json
from ._params import GoogleError, parse_rfc3339, validate
from ._state import GoogleSettings, GoogleState, WatchChannel

__all__ = ["PushMixin"]

PROVIDER = "google"


class PushMixin:
    """The push and free/busy handlers of :class:`GoogleSandbox`."""

    world: World
    state: GoogleState
    settings: GoogleSettings

    async def watch(self, request: Request, ctx: Ctx) -> Response:
        validate("calendar.events.watch", request.query_params.multi_items())
        body = await read_json(request)
        cid = str(body.get("id") or "")
        address = str(body.get("address") or "")
        if not cid or len(cid) > 64:
            raise GoogleError(status=400, reason="required", message="Channel id is required.")
        if body.get("type") not in ("web_hook", "webhook"):
            raise GoogleError(
                status=400, reason="invalid", message=f"Invalid channel type: {body.get('type')!r}."
            )
        if not address.startswith(("https://", "http://")):
            raise GoogleError(
                status=400,
                reason="push.webhookUrlNotHttps",
                message="WebHook callback must be HTTPS: " + address,
            )
        now = self.state.now()
        cap = now + self.settings.max_channel_ttl
        expiration = cap
        if body.get("expiration"):
            try:
                expiration = min(cap, int(str(body["expiration"])) / 1000)
            except ValueError:
                raise GoogleError(
                    status=400, reason="invalid", message="Invalid expiration."
                ) from None
            if expiration <= now:
                raise GoogleError(
                    status=400, reason="invalid", message="Expiration must be in the future."
                )
        path_cid = request.path_params["cid"]
        channel = WatchChannel(
            id=cid,
            resource_id=_resource_id(ctx.cal.id),
            resource_uri="https://www.googleapis.com/calendar/v3/calendars/"
            f"{quote(path_cid, safe='')}/events?alt=json",
            calendar_id=ctx.cal.id,
            email=ctx.email,
            address=address,
            token=str(body["token"]) if body.get("token") is not None else None,
            expiration=expiration,
        )
        self.state.add_channel(channel)
        self._notify(channel, "sync")
        out: dict[str, Any] = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": str(int(channel.expiration * 1000)),
        }
        if channel.token is not None:
            out["token"] = channel.token
        return JSONResponse(out)

    async def stop(self, request: Request, ctx: Ctx) -> Response:
        body = await read_json(request)
        channel = self.state.channels.get(str(body.get("id") or ""))
        if (
            channel is None
            or channel.email != ctx.email
            or channel.resource_id != body.get("resourceId")
        ):
            raise GoogleError(
                status=404,
                reason="notFound",
                message=f"Channel '{body.get('id')}' not found for project 'sandbox'",
            )
        if not channel.stopped:
            channel.stopped = True
            channel.late_messages = self.settings.notifications_after_stop
        return Response(status_code=204)

    def _on_change(self, change: NativeChange) -> None:
        for channel in list(self.state.channels.values()):
            if channel.calendar_id != change.calendar_id:
                continue
            state = "not_exists" if change.kind is ChangeKind.DELETED else "exists"
            for _ in range(max(1, self.settings.notifications_per_change)):
                self._notify(channel, state)

    def _notify(self, channel: WatchChannel, resource_state: str) -> None:
        number = self.state.next_message(channel)
        if number is None:
            return
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": email.utils.format_datetime(
                self.state.expires_at(channel), usegmt=True
            ),
            "X-Goog-Message-Number": str(number),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": resource_state,
            "X-Goog-Resource-URI": channel.resource_uri,
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token

        def live() -> bool:
            return not channel.stopped and self.state.now() < channel.expiration

        self.world.delivery.deliver(PROVIDER, channel.address, b"", headers, keep_trying=live)

    # -- free/busy -----------------------------------------------------------------------

    async def freebusy(self, request: Request, ctx: Ctx) -> Response:
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
                cal = (
                    self.world.primary_calendar(ctx.email)
                    if cid == "primary"
                    else (self.world.calendar(cid))
                )
            except (UnknownCalendar, StopIteration):
                calendars[cid] = {
                    "errors": [{"domain": "global", "reason": "notFound"}],
                    "busy": [],
                }
                continue
            calendars[cid] = {"busy": _busy(self.world, cal, lo, hi)}
        return JSONResponse(
            {
                "kind": "calendar#freeBusy",
                "timeMin": _z(lo),
                "timeMax": _z(hi),
                "calendars": calendars,
            }
        )


def _resource_id(calendar_id: str) -> str:
    return hashlib.sha256(f"events:{calendar_id}".encode()).hexdigest()[:27]


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
