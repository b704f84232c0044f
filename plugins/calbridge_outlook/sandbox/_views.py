"""calendarView paging and calendarView/delta rounds of the Graph sandbox.

* calendarView pages with ``$top``/``$skip`` in an absolute ``@odata.nextLink``.
* A delta round is computed when it starts and paged with ``$skiptoken`` links; its last
  page carries the ``@odata.deltaLink`` (``$deltatoken``). The token stands for the
  window, the calendar's change sequence and the occurrence ids in the window; the next
  round reports what changed since (series re-sent whole), ``@removed`` for what left,
  and (as Graph does) ``@removed`` noise for events changed outside the window.
* Tokens expire after ``delta_token_ttl`` sandbox seconds or when evicted on purpose:
  410 ``syncStateNotFound`` with a ``Location`` reset link.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from calbridge.sandbox import Occurrence, User

from .._tz import parse_graph_datetime
from ._core import GraphError, GraphView
from ._state import DeltaRound, DeltaState

__all__ = ["calendar_view", "delta", "parse_window"]


def _link(request: Request, params: dict[str, str]) -> str:
    base = str(request.url.replace(query=""))
    return f"{base}?{urlencode(params, safe='$')}"


def parse_window(request: Request) -> tuple[dt.datetime, dt.datetime]:
    """startDateTime/endDateTime (both required; no offset means UTC)."""
    q = request.query_params
    start, end = q.get("startDateTime"), q.get("endDateTime")
    if not start or not end:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        )
    try:
        lo = parse_graph_datetime(start, "UTC").astimezone(dt.UTC)
        hi = parse_graph_datetime(end, "UTC").astimezone(dt.UTC)
    except ValueError:
        raise GraphError(
            400, "ErrorInvalidParameter", "Invalid startDateTime/endDateTime"
        ) from None
    if hi <= lo:
        raise GraphError(400, "ErrorInvalidParameter", "endDateTime must be after startDateTime")
    return lo, hi


def _top(request: Request, default: int) -> int:
    try:
        top = int(request.query_params.get("$top", default))
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid $top") from None
    return max(1, min(1000, top))


def calendar_view(
    view: GraphView,
    request: Request,
    user: User,
    calendar_id: str,
    prefer: str,
    *,
    occurrences: list[Occurrence] | None = None,
) -> dict[str, Any]:
    """One calendarView (or instances) page."""
    lo, hi = parse_window(request)
    occs = occurrences if occurrences is not None else view.occurrences(calendar_id, lo, hi)
    top = _top(request, view.settings.page_size)
    skip = int(request.query_params.get("$skip", "0") or 0)
    expand_props = "singleValueExtendedProperties" in request.query_params.get("$expand", "")
    page = occs[skip : skip + top]
    body: dict[str, Any] = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('me')/calendarView",
        "value": [
            view.render_occurrence(user, o, prefer, expand_properties=expand_props) for o in page
        ],
    }
    if skip + top < len(occs):
        params = dict(request.query_params)
        params["$skip"] = str(skip + top)
        body["@odata.nextLink"] = _link(request, params)
    return body


def _removed(event_id: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": event_id,
        "@removed": {"reason": "deleted"},
    }


def delta(
    view: GraphView,
    request: Request,
    user: User,
    calendar_id: str,
    *,
    tz: str,
    page_size: int | None,
) -> dict[str, Any]:
    """One calendarView/delta page (start, continue or next round)."""
    q = request.query_params
    size = max(1, min(1000, page_size or view.settings.page_size))
    now = view.now()
    skip = q.get("$skiptoken")
    if skip is not None:
        found = view.rounds.get(skip)
        if found is None or found[0].email != user.email:
            raise _gone(view, request, None)
        return _page(view, request, *found)
    token = q.get("$deltatoken") or None  # an empty token (a Location reset) starts afresh
    if token is not None:
        with view.lock:
            state = view.deltas.get(token)
            ttl = view.settings.delta_token_ttl
            if state is not None and ttl is not None and (now - state.issued).total_seconds() > ttl:
                view.evicted[token] = view.deltas.pop(token)
                state = None
        if state is None or state.email != user.email or state.calendar_id != calendar_id:
            raise _gone(view, request, view.evicted.get(token))
        items, new_state = _incremental(view, user, state, tz)
    else:
        lo, hi = parse_window(request)
        sequence = view.world.sequence(calendar_id)
        occs = view.occurrences(calendar_id, lo, hi)
        items = [view.render_occurrence(user, o, tz) for o in occs]
        new_state = DeltaState(
            email=user.email,
            calendar_id=calendar_id,
            start=lo,
            end=hi,
            sequence=sequence,
            ids=frozenset(o.instance_id for o in occs),
            issued=now,
        )
    delta_token = secrets.token_urlsafe(24)
    pages = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
    rnd = DeltaRound(email=user.email, pages=pages, delta_token=delta_token, created=now)
    with view.lock:
        view.deltas[delta_token] = new_state
    return _page(view, request, rnd, 0)


def _page(view: GraphView, request: Request, rnd: DeltaRound, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
        "value": rnd.pages[index],
    }
    if index + 1 < len(rnd.pages):
        expires = rnd.created.timestamp() + view.settings.round_ttl
        token = view.rounds.issue((rnd, index + 1), expires=expires)
        body["@odata.nextLink"] = _link(request, {"$skiptoken": token})
    else:
        body["@odata.deltaLink"] = _link(request, {"$deltatoken": rnd.delta_token})
    return body


def _gone(view: GraphView, request: Request, state: DeltaState | None) -> GraphError:
    headers: dict[str, str] = {}
    if state is not None:
        headers["Location"] = _link(
            request,
            {
                "startDateTime": state.start.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                "endDateTime": state.end.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                "$deltatoken": "",
            },
        )
    return GraphError(
        410,
        "syncStateNotFound",
        "The sync state generation is not found; a full resync is required.",
        headers,
    )


def _incremental(
    view: GraphView, user: User, state: DeltaState, prefer: str
) -> tuple[list[dict[str, Any]], DeltaState]:
    cid = state.calendar_id
    sequence = view.world.sequence(cid)
    changed = {e.id for e in view.world.changes_since(cid, state.sequence)}
    occs = view.occurrences(cid, state.start, state.end)
    current = {o.instance_id: o for o in occs}
    items: list[dict[str, Any]] = []
    touched: set[str] = set()
    for iid, occ in current.items():
        family = {occ.event.id, occ.event.recurring_event_id or ""}
        touched |= family
        if iid not in state.ids or family & changed:
            items.append(view.render_occurrence(user, occ, prefer))
    for iid in sorted(state.ids - current.keys()):
        items.append(_removed(iid))
    if view.settings.delta_noise:
        gone = state.ids - current.keys()
        for eid in sorted(changed - touched):
            if eid not in gone and not any(i.startswith(eid + "_") for i in state.ids):
                items.append(_removed(eid))
    return items, DeltaState(
        email=state.email,
        calendar_id=cid,
        start=state.start,
        end=state.end,
        sequence=sequence,
        ids=frozenset(current),
        issued=view.now(),
    )
