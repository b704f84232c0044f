"""events.list / events.instances / events.watch query semantics over the world.

A list is computed from the calendar's events whose last write is at or before a
*snapshot* (the calendar's change sequence when the first page was asked for), sorted by
a stable key, and paged by that key, so a write while a client pages never shifts an
item: a changed event simply comes in the next incremental round. ``nextSyncToken`` (on
the last page only) means "changes after the snapshot".

The sorted result is computed for the first page and kept (a few queries' worth) for the
next ones while the calendar's sequence stays where it was; each page then costs only
rendering its own items. A write in between makes the next page compute it again, with
the same snapshot, so the answer is the same as without the cache.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

from calbridge import EventStatus
from calbridge.sandbox import NativeCalendar, NativeEvent, Occurrence, World, expand

from ._params import GoogleError
from ._render import (
    cancelled_instance_json,
    event_json,
    occurrence_json,
    rfc3339,
    tombstone_json,
)
from ._state import GoogleState, Listing, PageState, signature

__all__ = ["SYNC_INCOMPATIBLE", "list_events"]

SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
_FAR_PAST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HORIZON = dt.timedelta(days=730)

Body = dict[str, Any]
#: (sort key, the item's JSON, rendered when it is on the page)
Item = tuple[list[Any], Callable[[], Body]]


def _bad(message: str, location: str, reason: str = "invalid") -> GoogleError:
    return GoogleError(
        status=400, reason=reason, message=message, location=location, location_type="parameter"
    )


def _is_tombstone(e: NativeEvent) -> bool:
    """Deleted, or a cancelled event that is not an exception (= a deletion)."""
    return e.deleted or (e.status is EventStatus.CANCELLED and not e.recurring_event_id)


def _cancelled_exception(e: NativeEvent) -> bool:
    return not e.deleted and e.status is EventStatus.CANCELLED and bool(e.recurring_event_id)


def _matches(e: NativeEvent, p: dict[str, Any]) -> bool:
    if "iCalUID" in p and e.ical_uid != p["iCalUID"]:
        return False
    if "q" in p:
        text = " ".join(x for x in (e.summary, e.description, e.location) if x).lower()
        if p["q"].lower() not in text:
            return False
    for name, props in (
        ("privateExtendedProperty", e.private_properties),
        ("sharedExtendedProperty", e.shared_properties),
    ):
        for cond in p.get(name, []):
            key, _, value = cond.partition("=")
            if props.get(key) != value:
                return False
    return not ("eventTypes" in p and "default" not in p["eventTypes"])


def _key(
    order: str | None, seq: int, start: dt.datetime, updated: dt.datetime, id_: str
) -> list[Any]:
    if order == "startTime":
        return [start.isoformat(), id_]
    if order == "updated":
        return [updated.isoformat(), id_]
    return [seq, start.isoformat(), id_]


def list_events(
    world: World,
    state: GoogleState,
    cal: NativeCalendar,
    p: dict[str, Any],
    *,
    master: NativeEvent | None = None,
) -> dict[str, Any]:
    """The ``calendar#events`` body for a validated query ``p`` (``master``: instances)."""
    sync_token = p.get("syncToken")
    single = master is not None or bool(p.get("singleEvents", False))
    if sync_token is not None:
        for name in SYNC_INCOMPATIBLE:
            if name in p:
                raise _bad(f"Sync token cannot be combined with the {name} parameter.", name)
        if p.get("showDeleted") is False:
            raise _bad("showDeleted=false is not allowed with a sync token.", "showDeleted")
    tmin, tmax = p.get("timeMin"), p.get("timeMax")
    if tmin is not None and tmax is not None and tmin >= tmax:
        raise GoogleError(
            status=400,
            reason="timeRangeEmpty",
            domain="calendar",
            message="The specified time range is empty.",
            location="timeMax",
            location_type="parameter",
        )
    order = p.get("orderBy")
    if order == "startTime" and not single:
        raise _bad(
            "The requested ordering is not available for the particular query.",
            "orderBy",
            "badRequest",
        )
    now = world.clock.now()
    if "updatedMin" in p and (now - p["updatedMin"]).total_seconds() > (
        state.settings.updated_min_horizon
    ):
        raise GoogleError(
            status=410,
            reason="updatedMinTooLongAgo",
            domain="calendar",
            message="The requested minimum modification time lies too far in the past.",
            location="updatedMin",
            location_type="parameter",
        )
    filter_sig = signature(
        {
            "c": cal.id,
            "single": single,
            "types": p.get("eventTypes"),
            "hidden": p.get("showHiddenInvitations"),
        }
    )
    request_sig = signature(
        {k: v for k, v in p.items() if k != "pageToken"} | {"c": cal.id, "m": master and master.id}
    )
    since: int | None = None
    last: list[Any] | None = None
    if "pageToken" in p:
        page = state.read_page_token(p["pageToken"], request_sig)
        snapshot, since, last = page.snapshot, page.since, page.last
    else:
        snapshot = world.sequence(cal.id)
        if sync_token is not None:
            since, token_sig = state.read_sync_token(sync_token, cal.id)
            if token_sig != filter_sig:
                raise _bad(
                    "The sync token was issued for a query with other restrictions.", "syncToken"
                )
    lo = tmin or _FAR_PAST
    hi = tmax or (now + _HORIZON)
    # every page of one read asks for the same sorted result: it is computed once and
    # kept while the calendar does not change (its sequence, the window and the calendar
    # object are in the key), so a page costs its own rendering, not a sort of the calendar
    cache_key = (request_sig, snapshot, since, world.sequence(cal.id), lo, hi)
    listing = state.listing(cache_key)
    if listing is None or listing.cal is not cal:
        listing = _listing(world, cal, p, snapshot, since, lo, hi, single=single, master=master)
        state.keep_listing(cache_key, listing)
    first = 0 if last is None else bisect.bisect_right(listing.keys, last)
    size = min(2500, int(p.get("maxResults", 250)))
    end = first + size
    body: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": f'"p{snapshot:014d}"',
        "summary": cal.name,
        "description": "",
        "updated": rfc3339(listing.updated or now),
        "timeZone": p.get("timeZone") or cal.time_zone,
        "accessRole": "reader" if cal.read_only else "owner",
        "defaultReminders": [] if cal.read_only else [{"method": "popup", "minutes": 10}],
        "items": [render() for render in listing.renders[first:end]],
    }
    if end < len(listing.keys):
        body["nextPageToken"] = state.page_token(
            PageState(request_sig, snapshot, since, listing.keys[end - 1])
        )
    elif master is None:
        body["nextSyncToken"] = state.issue_sync_token(cal.id, snapshot, filter_sig)
    return body


def _listing(  # noqa: PLR0917 - the query, as list_events resolved it
    world: World,
    cal: NativeCalendar,
    p: dict[str, Any],
    snapshot: int,
    since: int | None,
    lo: dt.datetime,
    hi: dt.datetime,
    *,
    single: bool,
    master: NativeEvent | None,
) -> Listing:
    """The whole sorted result of a query, each item rendered only when a page needs it."""
    tmin, tmax = p.get("timeMin"), p.get("timeMax")
    order = p.get("orderBy")
    deltas = since is not None
    show_deleted = deltas or bool(p.get("showDeleted", False))
    known = [e for e in world.events(cal.id, include_deleted=True) if e.sequence <= snapshot]
    if master is not None:
        known = [e for e in known if master.id in (e.id, e.recurring_event_id)]
    changed = {e.id for e in known if since is None or e.sequence > since}
    updated_min = p.get("updatedMin")

    def wanted(e: NativeEvent) -> bool:
        if updated_min is not None and e.updated < updated_min:
            return False
        return _matches(e, p)

    items: list[Item] = []

    def add(
        e: NativeEvent, start: dt.datetime, id_: str, render: Callable[[], Body], seq: int
    ) -> None:
        # rendered only when a page with it is asked for
        items.append((_key(order, seq, start, e.updated, id_), render))

    if single:
        occurrences = expand([e for e in known if not e.deleted], lo, hi)
        for o in occurrences:
            source = o.event
            parent_id = source.recurring_event_id
            if deltas and source.id not in changed and (parent_id not in changed):
                continue
            if not wanted(source):
                continue
            item_id = o.instance_id if o.recurring and not source.recurring_event_id else source.id
            render = partial(occurrence_json, o, cal)
            add(source, o.start.as_utc(), item_id, render, source.sequence)
    else:
        for e in known:
            if e.id not in changed or _is_tombstone(e) or _cancelled_exception(e):
                continue
            if not wanted(e):
                continue
            if e.recurrence:
                if (tmin or tmax) and not expand([e], lo, hi):
                    continue
            elif not (e.start.as_utc() < hi and e.end.as_utc() > lo):
                continue
            add(e, e.start.as_utc(), e.id, partial(event_json, e, cal), e.sequence)
    for e in known:
        if e.id not in changed:
            continue
        if _cancelled_exception(e):
            # Google returns cancelled exceptions even without showDeleted unless expanding
            if single and not show_deleted:
                continue
            anchor = (e.original_start or e.start).as_utc()
            if not deltas and not (lo <= anchor < hi):
                continue
            add(e, anchor, e.id, partial(tombstone_json, e, cal), e.sequence)
        elif _is_tombstone(e) and show_deleted:
            if single and e.recurring_event_id:
                continue  # exceptions of a deleted series go with the series
            if single and e.recurrence:
                # expanded reads show a deleted series as its cancelled instances
                alive = attrs.evolve(e, deleted=False, status=EventStatus.CONFIRMED)
                for o in expand([alive], lo, hi):
                    render = partial(cancelled_instance_json, e, o, cal)
                    add(e, o.start.as_utc(), o.instance_id, render, e.sequence)
                continue
            if not deltas and not (e.start.as_utc() < hi and e.end.as_utc() > lo):
                continue
            add(e, e.start.as_utc(), e.id, partial(tombstone_json, e, cal), e.sequence)
    items.sort(key=lambda item: item[0])
    return Listing(
        cal=cal,
        keys=[key for key, _ in items],
        renders=[render for _, render in items],
        updated=max((e.updated for e in known), default=None),
    )


def occurrence_by_id(world: World, cal: NativeCalendar, event_id: str) -> Occurrence | None:
    """The plain instance ``<masterId>_<YYYYMMDD[THHMMSSZ]>`` of a live series, if any."""
    master_id, sep, suffix = event_id.rpartition("_")
    if not sep:
        return None
    try:
        master = world.event(cal.id, master_id)
    except KeyError:
        return None
    if not master.recurrence:
        return None
    try:
        if "T" in suffix:
            when = dt.datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        else:
            when = dt.datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    found = expand([master], when - dt.timedelta(days=2), when + dt.timedelta(days=2))
    for o in found:
        if o.instance_id == event_id:
            return o
    return None
