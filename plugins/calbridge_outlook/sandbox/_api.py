"""``/v1.0`` request routing of the Graph sandbox (one mailbox per access token)."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from calbridge import EventStatus
from calbridge.sandbox import NativeEvent, User, expand

from .._tz import parse_graph_datetime, to_iana
from ._core import PROVIDER, Found, GraphError, GraphView, not_found
from ._render import BadBody, calendar_json, change_key, fields_from_body
from ._subs import create_subscription, delete_subscription, renew_subscription
from ._views import calendar_view, delta, parse_window

__all__ = ["dispatch", "parse_prefer"]

_PREF = re.compile(r'\s*([A-Za-z][\w.]*)\s*=\s*("([^"]*)"|[^,\s]*)')


def parse_prefer(request: Request) -> dict[str, str]:
    """Every ``Prefer`` header's preferences (comma-joined or repeated headers)."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for m in _PREF.finditer(header):
            out[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return out


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(data, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return data


def _ok(body: Any, status: int = 200, prefer: dict[str, str] | None = None) -> JSONResponse:
    headers: dict[str, str] = {}
    if prefer:
        applied = []
        if "outlook.timezone" in prefer:
            applied.append(f'outlook.timezone="{prefer["outlook.timezone"]}"')
        if "idtype" in prefer:
            applied.append(f'IdType="{prefer["idtype"]}"')
        if applied:
            headers["Preference-Applied"] = ", ".join(applied)
    return JSONResponse(body, status_code=status, headers=headers)


async def dispatch(view: GraphView, request: Request, user: User, client_id: str) -> Response:
    """Route one ``/v1.0/...`` request."""
    # OData function calls may carry parentheses: ``calendarView/delta()`` (the SDK's form)
    segs = [s.removesuffix("()") for s in request.path_params["path"].split("/") if s]
    method = request.method
    prefer = parse_prefer(request)
    tz = prefer.get("outlook.timezone") or "UTC"
    if to_iana(tz) == "UTC" and tz.lower() not in ("utc", "etc/utc", "coordinated universal time"):
        tz = "UTC"
    if segs[:1] == ["subscriptions"]:
        return await _subscriptions(view, request, user, client_id, segs[1:])
    if segs[:1] == ["users"] and len(segs) >= 2:
        view.mailbox(user, segs[1])
        segs = ["me", *segs[2:]]
    if segs[:1] != ["me"]:
        raise GraphError(
            400, "BadRequest", f"Resource not found for the segment '{segs[0] if segs else ''}'."
        )
    rest = segs[1:]
    if not rest and method == "GET":
        return _ok(
            {
                "id": user.id,
                "displayName": user.name,
                "mail": user.email,
                "userPrincipalName": user.email,
            }
        )
    if rest == ["revokeSignInSessions"] and method == "POST":
        view.world.faults.trigger(PROVIDER, "revoke_tokens", user.email)
        return _ok({"value": True})
    if rest == ["calendars"] and method == "GET":
        cals = [calendar_json(c, user) for c in view.world.calendars(user.email)]
        return _ok({"value": cals})
    if rest == ["calendars"] and method == "POST":
        body = await _json(request)
        cal = view.world.add_calendar(user.email, str(body.get("name") or "Calendar"))
        return _ok(calendar_json(cal, user), 201)
    calendar_id: str | None = None
    named = False
    if rest[:1] == ["calendar"]:
        rest, named = rest[1:], True
    elif rest[:1] == ["calendars"] and len(rest) >= 2:
        calendar_id, rest, named = rest[1], rest[2:], True
    cid = view.calendar_of(user, calendar_id)
    if named and not rest and method == "GET":
        return _ok(calendar_json(view.world.calendar(cid), user))
    if rest == ["calendarView"] and method == "GET":
        return _ok(calendar_view(view, request, user, cid, tz), prefer=prefer)
    if rest == ["calendarView", "delta"] and method == "GET":
        size = prefer.get("odata.maxpagesize")
        body = delta(
            view,
            request,
            user,
            cid,
            tz=tz,
            page_size=int(size) if size and size.isdigit() else None,
        )
        return _ok(body, prefer=prefer)
    if rest == ["getSchedule"] and method == "POST":
        return _ok(_schedule(view, await _json(request)))
    if rest == ["events"]:
        if method == "POST":
            return await _create(view, request, user, cid, tz=tz, prefer=prefer)
        if method == "GET":
            return _ok(_list_events(view, request, user, cid, tz), prefer=prefer)
    if len(rest) >= 2 and rest[0] == "events":
        return await _event(view, request, user, rest[1], sub=rest[2:], tz=tz, prefer=prefer)
    raise GraphError(400, "BadRequest", "Unsupported request.")


def _list_events(
    view: GraphView, request: Request, user: User, cid: str, tz: str
) -> dict[str, Any]:
    events = [e for e in view.world.events(cid) if not e.is_exception]
    top = int(request.query_params.get("$top", view.settings.page_size))
    skip = int(request.query_params.get("$skip", "0"))
    body: dict[str, Any] = {
        "value": [view.render(user, _found(cid, e), tz) for e in events[skip : skip + top]]
    }
    if skip + top < len(events):
        params = dict(request.query_params)
        params["$skip"] = str(skip + top)
        body["@odata.nextLink"] = f"{request.url.replace(query='')}?{urlencode(params, safe='$')}"
    return body


def _found(cid: str, event: NativeEvent) -> Found:
    return Found(calendar_id=cid, event=event)


async def _create(
    view: GraphView, request: Request, user: User, cid: str, *, tz: str, prefer: dict[str, str]
) -> Response:
    body = await _json(request)
    if view.world.calendar(cid).read_only:
        raise GraphError(403, "ErrorAccessDenied", "Access is denied.")
    txn = body.get("transactionId")
    if isinstance(txn, str) and txn:
        with view.lock:
            existing = view.transactions.get((cid, txn))
        if existing is not None:
            try:
                found = view.find(user, existing)
            except GraphError:
                found = None
            if found is not None:
                return _ok(view.render(user, found, tz), 201, prefer)
    try:
        fields, overlay = fields_from_body(body)
    except BadBody as exc:
        raise GraphError(400, "ErrorInvalidRequest", str(exc)) from None
    if "start" not in fields or "end" not in fields:
        raise GraphError(400, "ErrorInvalidRequest", "start and end are required.")
    if fields["end"].as_utc() <= fields["start"].as_utc():
        raise GraphError(400, "ErrorInvalidRequest", "The end must be after the start.")
    event = view.world.insert_event(cid, origin=PROVIDER, **fields)
    view.set_overlay(event.id, overlay)
    if isinstance(txn, str) and txn:
        with view.lock:
            view.transactions[(cid, txn)] = event.id
    return _ok(view.render(user, _found(cid, event), tz), 201, prefer)


def _if_match(request: Request, current: str) -> None:
    given = request.headers.get("if-match")
    if given is None or given.strip() == "*":
        return
    tag = given.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    if tag.strip('"') != current:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key "
            "passed in the request does not match the current change key for the item.",
        )


async def _event(
    view: GraphView,
    request: Request,
    user: User,
    event_id: str,
    *,
    sub: list[str],
    tz: str,
    prefer: dict[str, str],
) -> Response:
    found = view.find(user, event_id)
    method = request.method
    expand_props = "singleValueExtendedProperties" in request.query_params.get("$expand", "")
    if sub == ["instances"] and method == "GET":
        if not found.event.is_master or found.occurrence is not None:
            raise GraphError(400, "ErrorInvalidRequest", "The event is not a series master.")
        lo, hi = parse_window(request)
        family = [
            e
            for e in view.world.events(found.calendar_id)
            if found.event.id in (e.id, e.recurring_event_id)
        ]
        occs = [o for o in expand(family, lo, hi) if o.original_start is not None]
        return _ok(calendar_view(view, request, user, found.calendar_id, tz, occurrences=occs))
    if sub:
        raise GraphError(400, "BadRequest", "Unsupported request.")
    if method == "GET":
        return _ok(view.render(user, found, tz, expand_properties=expand_props), prefer=prefer)
    if view.world.calendar(found.calendar_id).read_only:
        raise GraphError(403, "ErrorAccessDenied", "Access is denied.")
    _if_match(request, change_key(found.event))
    if method == "DELETE":
        if found.occurrence is not None:
            view.make_exception(found, {}, cancel=True)
        elif found.event.is_exception:
            view.world.update_event(
                found.calendar_id, found.event.id, status=EventStatus.CANCELLED, origin=PROVIDER
            )
        else:
            view.world.delete_event(found.calendar_id, found.event.id, origin=PROVIDER)
        return Response(status_code=204)
    if method != "PATCH":
        raise GraphError(405, "BadRequest", "Method not allowed.")
    body = await _json(request)
    try:
        fields, overlay = fields_from_body(body, current=found.event)
    except BadBody as exc:
        raise GraphError(400, "ErrorInvalidRequest", str(exc)) from None
    if found.occurrence is not None:
        fields.pop("recurrence", None)
        event = view.make_exception(found, fields)
    else:
        if found.event.is_exception:
            fields.pop("recurrence", None)
        event = view.world.update_event(
            found.calendar_id, found.event.id, origin=PROVIDER, **fields
        )
    view.set_overlay(event.id, overlay)
    return _ok(view.render(user, _found(found.calendar_id, event), tz), prefer=prefer)


def _schedule(view: GraphView, body: dict[str, Any]) -> dict[str, Any]:
    try:
        start = parse_graph_datetime(
            body["startTime"]["dateTime"], body["startTime"].get("timeZone")
        )
        end = parse_graph_datetime(body["endTime"]["dateTime"], body["endTime"].get("timeZone"))
    except (KeyError, TypeError, ValueError):
        raise GraphError(
            400, "ErrorInvalidRequest", "startTime and endTime are required."
        ) from None
    interval = int(body.get("availabilityViewInterval") or 30)
    out = []
    for address in body.get("schedules") or []:
        try:
            owner = view.world.user(str(address))
        except KeyError:
            owner = None
        if owner is None or owner.native != "microsoft":
            out.append(
                {
                    "scheduleId": address,
                    "availabilityView": "",
                    "scheduleItems": [],
                    "error": {
                        "message": "The user was not found.",
                        "responseCode": "ErrorMailRecipientNotFound",
                    },
                }
            )
            continue
        cid = view.world.primary_calendar(owner.email).id
        items = []
        slots = [0] * max(1, int((end - start).total_seconds() // (interval * 60)))
        for occ in view.occurrences(cid, start.astimezone(dt.UTC), end.astimezone(dt.UTC)):
            rendered = view.render_occurrence(owner, occ, "UTC")
            status = rendered["showAs"]
            if status == "free" or rendered["isCancelled"]:
                continue
            items.append(
                {
                    "isPrivate": rendered["sensitivity"] != "normal",
                    "status": status,
                    "subject": rendered["subject"],
                    "location": rendered["location"]["displayName"],
                    "start": rendered["start"],
                    "end": rendered["end"],
                }
            )
            code = {"tentative": 1, "busy": 2, "oof": 3, "workingElsewhere": 4}.get(status, 2)
            lo = occ.start.as_utc()
            hi = occ.end.as_utc()
            for i in range(len(slots)):
                s = start + dt.timedelta(minutes=interval * i)
                if lo < s + dt.timedelta(minutes=interval) and hi > s:
                    slots[i] = max(slots[i], code)
        out.append(
            {
                "scheduleId": address,
                "availabilityView": "".join(str(x) for x in slots),
                "scheduleItems": items,
                "workingHours": {
                    "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                    "startTime": "08:00:00.0000000",
                    "endTime": "17:00:00.0000000",
                    "timeZone": {"name": owner.time_zone},
                },
            }
        )
    return {"value": out}


async def _subscriptions(
    view: GraphView, request: Request, user: User, client_id: str, rest: list[str]
) -> Response:
    method = request.method
    if not rest and method == "POST":
        sub = await create_subscription(view, user, client_id, await _json(request))
        return _ok(sub.json(view.tenant_id), 201)
    if not rest and method == "GET":
        with view.lock:
            subs = [s for s in view.subscriptions.values() if s.email == user.email]
        return _ok({"value": [s.json(view.tenant_id) for s in subs]})
    if len(rest) == 1:
        if method == "PATCH":
            sub = renew_subscription(view, user, rest[0], await _json(request))
            return _ok(sub.json(view.tenant_id))
        if method == "DELETE":
            delete_subscription(view, user, rest[0])
            return Response(status_code=204)
        if method == "GET":
            with view.lock:
                found = view.subscriptions.get(rest[0])
            if found is None or found.email != user.email:
                raise not_found()
            return _ok(found.json(view.tenant_id))
    raise GraphError(400, "BadRequest", "Unsupported request.")
