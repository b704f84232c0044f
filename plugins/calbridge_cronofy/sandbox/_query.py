"""Read Events and Free Busy: filtering the cache, snapshots and absolute ``next_page`` URLs."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from starlette.datastructures import QueryParams

from calbridge import EventStatus, Transparency
from calbridge.sandbox import NativeEvent, Occurrence, expand

from ._engine import CronofyEngine
from ._state import CachedEvent, CronofyCalendar, Grant
from ._wire import (
    FieldError,
    event_json,
    free_busy_json,
    instance_uid,
    parse_bool,
    parse_query_time,
    zone,
)

__all__ = ["PageStore", "Query", "run_query"]

_MAX_PAGES = 20_000  # page tokens kept at most (oldest snapshots go first)
_FAR = dt.timedelta(days=3650)
_TICK = dt.timedelta(microseconds=1)


@attrs.frozen(kw_only=True)
class Query:
    """The parsed parameters of one Read Events / Free Busy call."""

    tzid: str
    start: dt.datetime | None
    end: dt.datetime | None
    last_modified: dt.datetime | None
    include_deleted: bool
    include_managed: bool
    only_managed: bool
    localized: bool
    google_event_ids: bool
    calendar_ids: tuple[str, ...]

    @classmethod
    def parse(cls, params: QueryParams) -> Query:
        """Parse query parameters (``True``/``true`` booleans, repeated ``calendar_ids[]``)."""
        tzid = params.get("tzid")
        if not tzid:
            raise FieldError("tzid", "errors.required", "required")
        tz = zone(tzid)

        def when(name: str) -> dt.datetime | None:
            value = params.get(name)
            return parse_query_time(value, tz, name) if value else None

        ids = params.getlist("calendar_ids[]") + params.getlist("calendar_ids")
        return cls(
            tzid=tzid,
            start=when("from"),
            end=when("to"),
            last_modified=when("last_modified"),
            include_deleted=parse_bool(params.get("include_deleted")),
            include_managed=parse_bool(params.get("include_managed")),
            only_managed=parse_bool(params.get("only_managed")),
            localized=parse_bool(params.get("localized_times")),
            google_event_ids=parse_bool(params.get("google_event_ids")),
            calendar_ids=tuple(ids),
        )


#: one result row: the occurrence, its cache entry, its calendar, its uid, the managed id
Row = tuple[Occurrence, CachedEvent, CronofyCalendar, str, str | None]


def run_query(engine: CronofyEngine, grant: Grant, q: Query, *, free_busy: bool) -> list[Row]:
    """Every row the query selects, ordered by start."""
    lo, hi = engine.window()
    account = engine.accounts[grant.sub]
    calendars = engine.account_calendars(account)
    if q.calendar_ids:
        known = {c.calendar_id: c for c in calendars}
        for cid in q.calendar_ids:
            if cid not in known:
                raise FieldError("calendar_ids", "errors.not_found", f"unknown calendar {cid}")
        calendars = [known[cid] for cid in q.calendar_ids]
    start = q.start or lo
    end = q.end or hi
    rows: list[Row] = []
    with engine.lock:
        for cal in calendars:
            cached_events = dict(engine.cache.get(cal.native_id, {}))
            live = [c.native for c in cached_events.values() if not c.deleted]

            def is_own(event: NativeEvent, native_id: str = cal.native_id) -> bool:
                link = engine.managed.get((native_id, event.recurring_event_id or event.id))
                return link is not None and link.client_id == grant.client_id

            # the default window does not limit the app's own (managed) events
            own_events = [e for e in live if is_own(e)]
            # Cronofy: events starting before `to` and ending on or after `from`
            occurrences = expand([e for e in live if not is_own(e)], start - _TICK, end)
            if own_events and (q.include_managed or q.only_managed):
                occurrences += expand(own_events, q.start or lo - _FAR, q.end or hi + _FAR)
            if q.include_deleted and not free_busy:
                occurrences += [
                    Occurrence(event=c.native, start=c.native.start, end=c.native.end)
                    for c in cached_events.values()
                    if c.deleted and c.native.start.as_utc() < end and c.native.end.as_utc() > start
                ]
            for occ in occurrences:
                base_id = occ.event.recurring_event_id or occ.event.id
                cached = cached_events.get(occ.event.id) or cached_events.get(base_id)
                if cached is None:
                    continue
                link = engine.managed.get((cal.native_id, base_id))
                own = link is not None and link.client_id == grant.client_id
                if q.only_managed and not own:
                    continue
                if own and not (q.include_managed or q.only_managed):
                    continue
                if q.last_modified is not None and cached.last_modified < q.last_modified:
                    continue
                if free_busy and (
                    occ.event.transparency is Transparency.TRANSPARENT
                    or occ.event.status is EventStatus.CANCELLED
                ):
                    continue
                uid = (
                    instance_uid(cal.native_id, base_id, occ.original_start)
                    if occ.original_start is not None
                    else cached.event_uid
                )
                rows.append((occ, cached, cal, uid, link.event_id if own and link else None))
    rows.sort(key=lambda r: (r[0].start.as_utc(), r[3]))
    return rows


@attrs.define
class _Snapshot:
    rows: list[Row]
    render: Callable[[Row], dict[str, Any]]
    key: str  #: ``events`` or ``free_busy``
    tokens: list[str]
    expires: float


class PageStore:
    """Paging snapshots: page tokens for ``/v1/{events,free_busy}/pages/{token}``."""

    def __init__(self, page_size: int, ttl: float, now: Callable[[], float]) -> None:
        self.page_size = page_size
        self.ttl = ttl
        self._now = now
        self._pages: OrderedDict[str, tuple[_Snapshot, int]] = OrderedDict()
        self._lock = threading.Lock()

    def first_page(
        self,
        rows: list[Row],
        render: Callable[[Row], dict[str, Any]],
        key: str,
        base_url: str,
    ) -> dict[str, Any]:
        """Page 1, registering tokens for the rest."""
        total = max(1, -(-len(rows) // self.page_size))
        now = self._now()
        snap = _Snapshot(
            rows, render, key, [secrets.token_hex(8) for _ in range(total)], now + self.ttl
        )
        with self._lock:
            for n, token in enumerate(snap.tokens[1:], start=2):
                self._pages[token] = (snap, n)
            while self._pages and (
                len(self._pages) > _MAX_PAGES or next(iter(self._pages.values()))[0].expires < now
            ):
                self._pages.popitem(last=False)
        return self._page(snap, 1, base_url)

    def page(self, token: str, base_url: str, key: str) -> dict[str, Any] | None:
        """A later page by token (None when unknown or expired)."""
        with self._lock:
            entry = self._pages.get(token)
        if entry is None or entry[0].key != key or entry[0].expires < self._now():
            return None
        return self._page(entry[0], entry[1], base_url)

    def _page(self, snap: _Snapshot, n: int, base_url: str) -> dict[str, Any]:
        total = len(snap.tokens)
        chunk = snap.rows[(n - 1) * self.page_size : n * self.page_size]
        pages: dict[str, Any] = {"current": n, "total": total}
        if n < total:
            pages["next_page"] = f"{base_url}/v1/{snap.key}/pages/{snap.tokens[n]}"
        return {"pages": pages, snap.key: [snap.render(row) for row in chunk]}


def renderer(
    engine: CronofyEngine, grant: Grant, q: Query, *, free_busy: bool
) -> Callable[[Row], dict[str, Any]]:
    """How rows of this query become JSON."""
    account = engine.accounts[grant.sub]
    native_google = account.provider_name == "google"

    def render(row: Row) -> dict[str, Any]:
        occ, cached, cal, uid, event_id = row
        if free_busy:
            return free_busy_json(occ, cal, q.localized, q.tzid)
        return event_json(
            occ,
            cal=cal,
            account=account,
            event_uid=uid,
            deleted=cached.deleted,
            last_modified=cached.last_modified,
            managed_event_id=event_id,
            native_google=native_google,
            localized=q.localized,
            tzid=q.tzid,
            google_event_ids=q.google_event_ids,
        )

    return render
