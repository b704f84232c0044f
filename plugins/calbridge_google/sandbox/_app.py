"""The Google sandbox ASGI app: Calendar v3 over the shared world.

Served under ``/google`` by the composite sandbox server:

* ``/calendar/v3/...``: calendarList, events (list, get, insert, update, patch, delete,
  instances, watch), channels.stop, freeBusy, with Google's JSON and error envelope;
* ``/o/oauth2/v2/auth``, ``/token``, ``/revoke``: OAuth (see ``_oauth``);
* ``/_sandbox/...``: Google-only controls (expire sync tokens, inject an error reason,
  mint tokens).

Faults armed for ``"google"`` in the world (``world.faults.fail_next("google", 403)``)
answer with Google's envelope: 403 ``usageLimits/rateLimitExceeded`` (or the next reason
queued by :meth:`GoogleSandbox.fail_next`), 429 ``rateLimitExceeded``, 5xx
``backendError``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calbridge import EventStatus
from calbridge.sandbox import (
    NativeCalendar,
    NativeEvent,
    Occurrence,
    RequestCounts,
    Throttle,
    UnknownCalendar,
    UnknownEvent,
    UnknownUser,
    World,
    counting,
    mount_path,
    request_counts,
    retry_after_headers,
)

from ._common import Ctx, deleted, error_response, not_found, read_json
from ._events import list_events, occurrence_by_id
from ._freebusy import free_busy
from ._oauth import oauth_routes
from ._params import GoogleError, validate
from ._push import WatchChannels
from ._render import (
    calendar_entry,
    check_client_id,
    check_times,
    etag,
    event_fields,
    event_json,
    occurrence_json,
)
from ._state import GoogleState, WatchChannel

__all__ = ["GoogleSandbox"]

PROVIDER = "google"
ORIGIN = "google"
_REASONS = {
    400: ("global", "badRequest", "Bad Request"),
    401: ("global", "authError", "Invalid Credentials"),
    403: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    404: ("global", "notFound", "Not Found"),
    409: ("global", "conflict", "Conflict"),
    410: (
        "calendar",
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
    ),
    412: ("global", "conditionNotMet", "Precondition Failed"),
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
}
_REASON_DOMAINS = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "forbidden": ("global", "Forbidden"),
    "forbiddenForNonOrganizer": (
        "calendar",
        "Shared properties can only be changed by the organizer of the event.",
    ),
}

Handler = Callable[[Request], Awaitable[Response]]


class GoogleSandbox:
    """The Google view of a :class:`~calbridge.sandbox.World` (one per world)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.state = GoogleState(world)
        self.settings = self.state.settings
        world.views["google"] = self
        world.faults.on(PROVIDER, "expire_tokens", self.state.expire_access)
        world.faults.on(PROVIDER, "revoke_tokens", self.state.revoke_user)
        #: events.watch channels and their notifications
        self.push = WatchChannels(world, self.state)
        self._unsubscribe = world.subscribe(self.push.on_change)
        api = "/calendar/v3"
        routes = [
            Route(f"{api}/users/me/calendarList", self._h(self.calendar_list), methods=["GET"]),
            Route(
                f"{api}/users/me/calendarList/{{cid:path}}",
                self._h(self.calendar_get),
                methods=["GET"],
            ),
            Route(
                f"{api}/calendars/{{cid}}/events/watch", self._h(self.push.watch), methods=["POST"]
            ),
            Route(f"{api}/calendars/{{cid}}/events", self._h(self.events), methods=["GET", "POST"]),
            Route(
                f"{api}/calendars/{{cid}}/events/{{eid}}/instances",
                self._h(self.instances),
                methods=["GET"],
            ),
            Route(
                f"{api}/calendars/{{cid}}/events/{{eid}}",
                self._h(self.event),
                methods=["GET", "PUT", "PATCH", "DELETE"],
            ),
            Route(f"{api}/channels/stop", self._h(self.push.stop), methods=["POST"]),
            Route(f"{api}/freeBusy", self._h(self.freebusy), methods=["POST"]),
            Route("/_sandbox/expire-sync-tokens", self._control_expire, methods=["POST"]),
            Route("/_sandbox/errors", self._control_errors, methods=["POST"]),
        ]
        routes += [
            Route(r.path, self._faulty(r.endpoint), methods=r.methods)
            for r in oauth_routes(self.state)
        ]
        #: what this sandbox answered (``GET /_sandbox/requests``)
        self.counts: RequestCounts = request_counts(world, PROVIDER)
        #: per-user quota (``settings.rate_limits``; none by default)
        self.throttle = Throttle(self.counts, enabled=lambda: world.rate_limits)
        self.app = counting(Starlette(routes=routes), self.counts)

    # -- controls (Python) ---------------------------------------------------------------

    def expire_sync_tokens(self, calendar_id: str | None = None) -> None:
        """Every sync token issued so far (of one calendar, or all) now answers 410."""
        self.state.expire_sync_tokens(calendar_id)

    def fail_next(
        self,
        status: int,
        *,
        reason: str | None = None,
        times: int = 1,
        path_prefix: str = "",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``times`` calls with ``status`` (and ``reason``, e.g. quotaExceeded)."""
        if reason is not None:
            self.state.injected_reasons.extend([reason] * times)
        self.world.faults.fail_next(
            PROVIDER, status, times=times, path_prefix=path_prefix, retry_after=retry_after
        )

    def issue_tokens(
        self,
        email: str,
        client_id: str = "sandbox",
        scope: str = "https://www.googleapis.com/auth/calendar",
    ) -> dict[str, Any]:
        """Tokens for ``email`` (created natively on Google if unknown), no OAuth dance."""
        return self.state.issue(email, client_id, scope)

    def channels(self) -> list[WatchChannel]:
        """Every watch channel opened so far."""
        return list(self.state.channels.values())

    # -- plumbing ------------------------------------------------------------------------

    async def _inject(self, request: Request) -> Response | None:
        injected = await self.world.faults.intercept(PROVIDER, mount_path(request.scope))
        if injected is None:
            return None
        domain, reason, message = _REASONS.get(
            injected.status,
            ("global", "backendError", "Backend Error")
            if injected.status >= 500
            else ("global", "badRequest", "Bad Request"),
        )
        if self.state.injected_reasons:
            reason = self.state.injected_reasons.pop(0)
            domain, message = _REASON_DOMAINS.get(reason, (domain, message))
        err = GoogleError(status=injected.status, reason=reason, message=message, domain=domain)
        return error_response(err, retry_after_headers(injected.retry_after))

    def _faulty(self, fn: Any) -> Handler:
        async def run(request: Request) -> Response:
            injected = await self._inject(request)
            if injected is not None:
                return injected
            response: Response = await fn(request)
            return response

        return run

    def _h(self, fn: Callable[[Request, Ctx], Awaitable[Response]]) -> Handler:
        async def run(request: Request) -> Response:
            injected = await self._inject(request)
            if injected is not None:
                return injected
            auth = request.headers.get("authorization", "")
            email = None
            if auth.lower().startswith("bearer "):
                email = self.state.user_for(auth[7:].strip())
            if email is None:
                err = GoogleError(
                    status=401,
                    reason="authError",
                    message="Invalid Credentials",
                    location="Authorization",
                    location_type="header",
                )
                return error_response(
                    err,
                    {
                        "WWW-Authenticate": 'Bearer realm="https://'
                        'accounts.google.com/", error="invalid_token"'
                    },
                )
            # Google counts every authenticated request against the project's quota
            with self.throttle.admit(email, rates=self.settings.rate_limits) as refused:
                if refused is not None:
                    return error_response(
                        GoogleError(
                            status=403,
                            reason="userRateLimitExceeded",
                            message="User Rate Limit Exceeded",
                            domain="usageLimits",
                        )
                    )
                try:
                    cid = request.path_params.get("cid")
                    cal = self._calendar(email, cid) if cid else self.world.primary_calendar(email)
                    return await fn(request, Ctx(email=email, cal=cal))
                except GoogleError as err:
                    return error_response(err)
                except (UnknownCalendar, UnknownEvent, UnknownUser):
                    return error_response(not_found())

        return run

    def _calendar(self, email: str, cid: str) -> NativeCalendar:
        if cid == "primary":
            return self.world.primary_calendar(email)
        cal = self.world.calendar(cid)
        if cal.owner != email or cal.deleted:
            raise not_found()
        return cal

    @staticmethod
    def _params(request: Request, method: str) -> dict[str, Any]:
        return validate(method, request.query_params.multi_items())

    # -- calendarList --------------------------------------------------------------------

    async def calendar_list(self, request: Request, ctx: Ctx) -> Response:
        p = self._params(request, "calendar.calendarList.list")
        size = min(250, int(p.get("maxResults", 100)))
        cals = [c for c in self.world.calendars(ctx.email) if p.get("showDeleted") or not c.deleted]
        if p.get("minAccessRole") in ("owner", "writer"):
            cals = [c for c in cals if not c.read_only]
        start = 0
        if "pageToken" in p:
            try:
                start = int(p["pageToken"].removeprefix("cl"))
            except ValueError:
                raise GoogleError(
                    status=400,
                    reason="invalid",
                    message="Invalid page token value.",
                    location="pageToken",
                    location_type="parameter",
                ) from None
        page = cals[start : start + size]
        body: dict[str, Any] = {
            "kind": "calendar#calendarList",
            "etag": f'"cl{len(cals):014d}"',
            "items": [calendar_entry(c) for c in page],
        }
        if start + size < len(cals):
            body["nextPageToken"] = f"cl{start + size}"
        else:
            body["nextSyncToken"] = "cls" + secrets.token_urlsafe(12)
        return JSONResponse(body)

    async def calendar_get(self, request: Request, ctx: Ctx) -> Response:
        return JSONResponse(calendar_entry(ctx.cal))

    # -- events --------------------------------------------------------------------------

    async def events(self, request: Request, ctx: Ctx) -> Response:
        if request.method == "GET":
            p = self._params(request, "calendar.events.list")
            return JSONResponse(list_events(self.world, self.state, ctx.cal, p))
        self._params(request, "calendar.events.insert")
        return JSONResponse(await self._insert(request, ctx))

    def _writable(self, cal: NativeCalendar) -> None:
        if cal.read_only:
            raise GoogleError(
                status=403,
                reason="requiredAccessLevel",
                message="You need to have writer access to this calendar.",
            )

    async def _insert(self, request: Request, ctx: Ctx) -> dict[str, Any]:
        self._writable(ctx.cal)
        body = await read_json(request)
        fields = event_fields(body)
        if "start" not in body or "end" not in body:
            raise GoogleError(status=400, reason="required", message="Missing end time.")
        check_times(fields["start"], fields["end"])
        event_id = check_client_id(body["id"]) if body.get("id") is not None else None
        if event_id is not None:
            try:
                self.world.event(ctx.cal.id, event_id, include_deleted=True)
            except UnknownEvent:
                pass
            else:
                raise GoogleError(
                    status=409,
                    reason="duplicate",
                    message="The requested identifier already exists.",
                )
        ical = body.get("iCalUID")
        event = self.world.insert_event(
            ctx.cal.id,
            id=event_id,
            ical_uid=str(ical) if ical else None,
            origin=ORIGIN,
            **fields,
        )
        return event_json(event, ctx.cal)

    def _find(self, cal: NativeCalendar, eid: str) -> NativeEvent | None:
        try:
            return self.world.event(cal.id, eid, include_deleted=True)
        except UnknownEvent:
            return None

    async def event(self, request: Request, ctx: Ctx) -> Response:
        eid = request.path_params["eid"]
        method = request.method
        self._params(
            request,
            {
                "GET": "calendar.events.get",
                "PUT": "calendar.events.update",
                "PATCH": "calendar.events.patch",
                "DELETE": "calendar.events.delete",
            }[method],
        )
        stored = self._find(ctx.cal, eid)
        if stored is not None:
            return await self._stored(request, ctx, stored)
        occurrence = occurrence_by_id(self.world, ctx.cal, eid)
        if occurrence is None:
            raise not_found()
        return await self._instance(request, ctx, occurrence)

    def _may_write(self, request: Request, cal: NativeCalendar, current: NativeEvent) -> None:
        self._writable(cal)
        if_match = request.headers.get("if-match")
        if if_match and if_match not in ("*", etag(current)):
            raise GoogleError(
                status=412,
                reason="conditionNotMet",
                message="Precondition Failed",
                location="If-Match",
                location_type="header",
            )

    @staticmethod
    def _fields(body: dict[str, Any], base: NativeEvent, partial: bool) -> dict[str, Any]:
        if partial and base.recurrence and "recurrence" not in body:
            body = {**body, "recurrence": list(base.recurrence)}  # a series needs its zone
        return event_fields(body, partial=partial)

    async def _stored(self, request: Request, ctx: Ctx, stored: NativeEvent) -> Response:
        """get/update/patch/delete of a stored event (single, master or exception)."""
        if request.method == "GET":
            return JSONResponse(event_json(stored, ctx.cal))
        self._may_write(request, ctx.cal, stored)
        if request.method == "DELETE":
            if stored.deleted or stored.status is EventStatus.CANCELLED:
                raise deleted()
            if stored.recurring_event_id:  # an exception: cancel it, the series stays
                self.world.update_event(
                    ctx.cal.id, stored.id, origin=ORIGIN, status=EventStatus.CANCELLED
                )
            else:
                self.world.delete_event(ctx.cal.id, stored.id, origin=ORIGIN)
            return Response(status_code=204)
        if stored.deleted:
            raise not_found()
        fields = self._fields(await read_json(request), stored, request.method == "PATCH")
        check_times(fields.get("start", stored.start), fields.get("end", stored.end))
        updated = self.world.update_event(ctx.cal.id, stored.id, origin=ORIGIN, **fields)
        return JSONResponse(event_json(updated, ctx.cal))

    async def _instance(self, request: Request, ctx: Ctx, occurrence: Occurrence) -> Response:
        """get/update/patch/delete of a plain instance: writes make it an exception."""
        if request.method == "GET":
            return JSONResponse(occurrence_json(occurrence, ctx.cal))
        master = occurrence.event
        self._may_write(request, ctx.cal, master)
        merged: dict[str, Any] = {
            **master.occurrence_fields(),
            "start": occurrence.start,
            "end": occurrence.end,
        }
        if request.method == "DELETE":
            merged["status"] = EventStatus.CANCELLED
        else:
            partial = request.method == "PATCH"
            fields = event_fields(await read_json(request), partial=partial)
            fields.pop("recurrence", None)
            if not partial:  # a full replace keeps only the occurrence's identity
                merged = {"start": occurrence.start, "end": occurrence.end}
            merged.update(fields)
            check_times(merged["start"], merged["end"])
        exception = self.world.insert_event(
            ctx.cal.id,
            id=occurrence.instance_id,
            ical_uid=master.ical_uid,
            recurring_event_id=master.id,
            original_start=occurrence.original_start,
            origin=ORIGIN,
            **merged,
        )
        if request.method == "DELETE":
            return Response(status_code=204)
        return JSONResponse(event_json(exception, ctx.cal))

    async def instances(self, request: Request, ctx: Ctx) -> Response:
        p = self._params(request, "calendar.events.instances")
        master = self._find(ctx.cal, request.path_params["eid"])
        if master is None or master.deleted:
            raise not_found()
        if not master.recurrence:
            return JSONResponse(
                {
                    "kind": "calendar#events",
                    "summary": ctx.cal.name,
                    "timeZone": ctx.cal.time_zone,
                    "accessRole": "owner",
                    "defaultReminders": [],
                    "items": [event_json(master, ctx.cal)],
                }
            )
        if "originalStart" in p:
            p.pop("originalStart")
        return JSONResponse(list_events(self.world, self.state, ctx.cal, p, master=master))

    # -- freeBusy ------------------------------------------------------------------------

    async def freebusy(self, request: Request, ctx: Ctx) -> Response:
        return await free_busy(self.world, request, ctx)

    # -- controls (HTTP) -----------------------------------------------------------------

    async def _control_expire(self, request: Request) -> Response:
        body = await read_json(request)
        self.expire_sync_tokens(body.get("calendar_id"))
        return Response(status_code=204)

    async def _control_errors(self, request: Request) -> Response:
        body = await read_json(request)
        self.fail_next(
            int(body["status"]), reason=body.get("reason"), times=int(body.get("times", 1))
        )
        return Response(status_code=204)
