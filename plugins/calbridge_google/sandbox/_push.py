"""Watch channels: events.watch, channels.stop and the notifications they deliver."""

from __future__ import annotations

import email.utils
import hashlib
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calbridge.sandbox import ChangeKind, NativeChange, World

from ._common import Ctx, read_json
from ._params import GoogleError, validate
from ._state import GoogleSettings, GoogleState, WatchChannel

__all__ = ["WatchChannels"]

PROVIDER = "google"


class WatchChannels:
    """The Google sandbox's push: channels opened by events.watch, notified of every native
    change of their calendar (``exists`` / ``not_exists``) until stopped or expired."""

    def __init__(self, world: World, state: GoogleState) -> None:
        self.world = world
        self.state = state
        self.settings: GoogleSettings = state.settings

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

    def on_change(self, change: NativeChange) -> None:
        """Notify the channels watching the changed calendar (the world's listener)."""
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


def _resource_id(calendar_id: str) -> str:
    return hashlib.sha256(f"events:{calendar_id}".encode()).hexdigest()[:27]
