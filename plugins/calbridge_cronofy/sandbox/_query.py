"""Read Events and Free Busy: filtering the cache, snapshots and absolute ``next_page`` URLs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import attrs
from starlette.datastructures import QueryParams

from calbridge import EventStatus, EventTime, Transparency
from calbridge.sandbox import Grant, NativeEvent, Occurrence, PageTokens, expand

from ._engine import CronofyEngine
from ._state import CachedEvent, CronofyCalendar
from ._wire import (
    FieldError,
    encode_json,
    event_json,
    free_busy_json,
    instance_uid,
    parse_bool,
    parse_query_time,
    zone,
)

__all__ = ["PageStore", "Query", "encoded_renderer", "renderer", "run_query"]

_MAX_PAGES = 20_000  # page tokens kept at most (oldest snapshots go first)
_FAR = dt.timedelta(days=3650)
_TICK = dt.timedelta(microseconds=1)
_MEMO_CAP = 1024  # encoded renderings kept per cache entry (a series' instances share one)


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
    """Every row the query selects, ordered by start.

    Series are expanded to instances (uid: series + original start). With
    ``include_deleted``, an instance that is gone (its occurrence cancelled or deleted, or
    its whole series deleted) is a deleted row with the uid and times it had while shown.
    """
    lo, hi = engine.window()
    account = engine.accounts[grant.subject]
    calendars = engine.account_calendars(account)
    if q.calendar_ids:
        known = {c.calendar_id: c for c in calendars}
        for cid in q.calendar_ids:
            if cid not in known:
                raise FieldError("calendar_ids", "errors.not_found", f"unknown calendar {cid}")
        calendars = [known[cid] for cid in q.calendar_ids]
    start = q.start or lo
    end = q.end or hi
    other_window = (start - _TICK, end)  # Cronofy: starting before `to`, ending on/after `from`
    own_window = (q.start or lo - _FAR, q.end or hi + _FAR)  # the app's own: no default window
    with_managed = q.include_managed or q.only_managed
    with_deleted = q.include_deleted and not free_busy
    client_id = grant.client_id
    managed = engine.managed
    rows: list[Row] = []

    def window_of(native_id: str, master_id: str) -> tuple[dt.datetime, dt.datetime] | None:
        """Where a series' instances are read (None: not at all, the app's own unasked)."""
        link = managed.get((native_id, master_id))
        if link is None or link.client_id != client_id:
            return other_window
        return own_window if with_managed else None

    with engine.lock:
        for cal in calendars:
            native_id = cal.native_id
            cached_events = dict(engine.cache.get(native_id, {}))
            # the default window does not limit the app's own (managed) events
            own_events: list[NativeEvent] = []
            other_events: list[NativeEvent] = []
            series = _SeriesIndex()
            for c in cached_events.values():
                e = c.native
                if e.recurrence or e.recurring_event_id is not None:
                    series.add(c)
                if c.deleted:
                    continue
                link = managed.get((native_id, e.recurring_event_id or e.id))
                if link is not None and link.client_id == client_id:
                    own_events.append(e)
                else:
                    other_events.append(e)
            occurrences = expand(other_events, *other_window)
            if own_events and with_managed:
                occurrences += expand(own_events, *own_window)
            # entries of rows that have none in the cache: instances that are gone
            entries: dict[int, CachedEvent] = {}
            if with_deleted:
                occurrences += [
                    Occurrence(event=c.native, start=c.native.start, end=c.native.end)
                    for c in cached_events.values()
                    if c.deleted
                    and not c.native.recurrence
                    and c.native.recurring_event_id is None
                    and c.native.start_utc < end
                    and c.native.end_utc > start
                ]
                for gone, gone_entry in series.removed_instances(native_id, window_of):
                    occurrences.append(gone)
                    entries[id(gone)] = gone_entry
            for occ in occurrences:
                e = occ.event
                base_id = e.recurring_event_id or e.id
                entry = entries.get(id(occ)) if entries else None
                cached = entry or cached_events.get(e.id) or cached_events.get(base_id)
                if cached is None:
                    continue
                link = managed.get((native_id, base_id))
                own = link is not None and link.client_id == client_id
                if q.only_managed and not own:
                    continue
                if own and not with_managed:
                    continue
                uid = (
                    instance_uid(native_id, base_id, occ.original_start)
                    if occ.original_start is not None
                    else cached.event_uid
                )
                if (
                    series.by_start
                    and entry is None
                    and occ.original_start is not None
                    and e.recurring_event_id is None
                ):
                    cached = series.reverted(cached, occ.original_start, uid)
                if q.last_modified is not None and cached.last_modified < q.last_modified:
                    continue
                if free_busy and (
                    e.transparency is Transparency.TRANSPARENT or e.status is EventStatus.CANCELLED
                ):
                    continue
                event_id = link.event_id if own and link else None
                row = cached.row
                if (
                    row is None
                    or row[0] is not occ
                    or row[2] is not cal
                    or row[3] != uid
                    or row[4] != event_id
                ):
                    row = (occ, cached, cal, uid, event_id)
                    if occ.original_start is None:
                        cached.row = row  # shared by later reads while nothing changed
                rows.append(row)
    rows.sort(key=_row_order)
    return rows


class _SeriesIndex:
    """One calendar's cached series, for instances that are gone or came back.

    Masters by id and exceptions by (master id, original start), tombstones included.
    """

    def __init__(self) -> None:
        self.masters: dict[str, CachedEvent] = {}
        self.exceptions: dict[str, list[CachedEvent]] = {}
        self.by_start: dict[tuple[str, dt.datetime], CachedEvent] = {}
        #: series with an instance removed: master deleted, exception cancelled or deleted
        self.touched: set[str] = set()

    def add(self, c: CachedEvent) -> None:
        e = c.native
        if e.recurring_event_id is not None and e.original_start is not None:
            self.exceptions.setdefault(e.recurring_event_id, []).append(c)
            key = (e.recurring_event_id, e.original_start.as_utc())
            known = self.by_start.get(key)
            if known is None or known.deleted:  # a live exception wins over a tombstone
                self.by_start[key] = c
            if c.deleted or e.status is EventStatus.CANCELLED:
                self.touched.add(e.recurring_event_id)
        elif e.recurrence:
            self.masters[e.id] = c
            if c.deleted:
                self.touched.add(e.id)

    def reverted(self, master: CachedEvent, original_start: EventTime, uid: str) -> CachedEvent:
        """The entry of a plain instance: its master's, or, when a deleted exception made it
        revert to the series after the master's last change, one modified then."""
        exc = self.by_start.get((master.native.id, original_start.as_utc()))
        if exc is None or not exc.deleted or exc.last_modified <= master.last_modified:
            return master
        return CachedEvent(event_uid=uid, native=master.native, last_modified=exc.last_modified)

    def removed_instances(
        self,
        native_id: str,
        window_of: Callable[[str, str], tuple[dt.datetime, dt.datetime] | None],
    ) -> list[tuple[Occurrence, CachedEvent]]:
        """Deleted rows: instances of touched series, as last shown, that are not live now.

        Each gets a deleted entry of its own: the uid it had, modified when it went (the
        series' deletion, else its exception's cancellation or deletion).
        """
        out: list[tuple[Occurrence, CachedEvent]] = []
        for master_id in sorted(self.touched):
            master = self.masters.get(master_id)
            window = window_of(native_id, master_id)
            if master is None or master.last_shown is None or window is None:
                continue  # never shown (or not the caller's to see)
            shown = [master.last_shown] + [
                c.last_shown for c in self.exceptions.get(master_id, ()) if c.last_shown
            ]
            for occ in expand(shown, *window):
                if occ.original_start is None:
                    continue
                when = occ.original_start.as_utc()
                exc = self.by_start.get((master_id, when))
                if _instance_live(master, exc, when):
                    continue
                gone_with = exc if exc is not None and not master.deleted else master
                entry = CachedEvent(
                    event_uid=instance_uid(native_id, master_id, occ.original_start),
                    native=occ.event,
                    last_modified=gone_with.last_modified,
                    deleted=True,
                )
                out.append((occ, entry))
        return out


def _instance_live(master: CachedEvent, exc: CachedEvent | None, when: dt.datetime) -> bool:
    """Whether the series' instance originally at ``when`` exists now (anywhere)."""
    if master.deleted:
        return False
    if exc is not None and not exc.deleted:
        return exc.native.status is not EventStatus.CANCELLED
    # no exception (any more): the instance exists if the series' rule still makes it
    return any(
        o.original_start is not None and o.original_start.as_utc() == when
        for o in expand([master.native], when - _TICK, when + _TICK)
    )


def _row_order(row: Row) -> tuple[dt.datetime, str]:
    return row[0].start_utc, row[3]


@attrs.define
class _Snapshot:
    rows: list[Row]
    render: Callable[[Row], bytes]
    key: str  #: ``events`` or ``free_busy``
    #: the token of page n + 1 at index n (index 0, page 1, has none)
    tokens: list[str] = attrs.field(factory=list)


class PageStore:
    """Paging snapshots: page tokens for ``/v1/{events,free_busy}/pages/{token}``.

    The rows of a read are cut when its first page is asked for; every later page's token
    is issued then, in a :class:`calbridge.sandbox.PageTokens` (``ttl`` seconds of sandbox
    time, the oldest snapshots going first beyond 20,000 tokens). Pages are answered as
    encoded JSON bodies: the rows' encoded fragments joined into
    ``{"pages": {...}, "<key>": [...]}``, byte for byte what encoding the whole page as
    one object gives.
    """

    def __init__(self, page_size: int, ttl: float, now: Callable[[], float]) -> None:
        self.page_size = page_size
        self._tokens: PageTokens[tuple[_Snapshot, int]] = PageTokens(
            now, ttl=ttl, capacity=_MAX_PAGES
        )

    def first_page(
        self,
        rows: list[Row],
        render: Callable[[Row], bytes],
        key: str,
        base_url: str,
    ) -> bytes:
        """Page 1, registering tokens for the rest."""
        total = max(1, -(-len(rows) // self.page_size))
        snap = _Snapshot(rows, render, key)
        snap.tokens = [""] + [self._tokens.issue((snap, n)) for n in range(2, total + 1)]
        return self._page(snap, 1, base_url)

    def page(self, token: str, base_url: str, key: str) -> bytes | None:
        """A later page by token (None when unknown or expired)."""
        entry = self._tokens.get(token)
        if entry is None or entry[0].key != key:
            return None
        return self._page(entry[0], entry[1], base_url)

    def _page(self, snap: _Snapshot, n: int, base_url: str) -> bytes:
        total = len(snap.tokens)
        chunk = snap.rows[(n - 1) * self.page_size : n * self.page_size]
        pages: dict[str, Any] = {"current": n, "total": total}
        if n < total:
            pages["next_page"] = f"{base_url}/v1/{snap.key}/pages/{snap.tokens[n]}"
        render = snap.render
        return b"".join(
            (
                b'{"pages":',
                encode_json(pages),
                b",",
                encode_json(snap.key),
                b":[",
                b",".join([render(row) for row in chunk]),
                b"]}",
            )
        )


def _row_json(
    engine: CronofyEngine, grant: Grant, q: Query, *, free_busy: bool
) -> Callable[[Row, bool, dt.datetime], dict[str, Any]]:
    """How a row of this query becomes JSON, given its entry's ``deleted``/``last_modified``."""
    account = engine.accounts[grant.subject]
    native_google = account.provider_name == "google"

    def render(row: Row, deleted: bool, last_modified: dt.datetime) -> dict[str, Any]:
        occ, _cached, cal, uid, event_id = row
        if free_busy:
            return free_busy_json(occ, cal, q.localized, q.tzid)
        return event_json(
            occ,
            cal=cal,
            account=account,
            event_uid=uid,
            deleted=deleted,
            last_modified=last_modified,
            managed_event_id=event_id,
            native_google=native_google,
            localized=q.localized,
            tzid=q.tzid,
            google_event_ids=q.google_event_ids,
        )

    return render


def renderer(
    engine: CronofyEngine, grant: Grant, q: Query, *, free_busy: bool
) -> Callable[[Row], dict[str, Any]]:
    """How rows of this query become JSON values (computed afresh on every call)."""
    row_json = _row_json(engine, grant, q, free_busy=free_busy)

    def render(row: Row) -> dict[str, Any]:
        cached = row[1]
        return row_json(row, cached.deleted, cached.last_modified)

    return render


def encoded_renderer(
    engine: CronofyEngine, grant: Grant, q: Query, *, free_busy: bool
) -> Callable[[Row], bytes]:
    """:func:`renderer`'s JSON, encoded, memoized on each row's cache entry.

    The memo key holds everything a row's JSON depends on: the native event (by identity,
    the entry keeping it alive), the occurrence's times when they are not the event's own,
    the instance id, uid, managed id, the cache entry's ``deleted`` and ``last_modified``
    as they are now, the calendar, and the query's and account's rendering options.
    A cache entry drops its memo when its native event changes, and at most
    :data:`_MEMO_CAP` renderings are kept per entry.
    """
    account = engine.accounts[grant.subject]
    row_json = _row_json(engine, grant, q, free_busy=free_busy)
    options = (
        free_busy,
        q.localized,
        q.tzid,
        q.google_event_ids,
        account.provider_name,
        account.email,
        account.name,
    )

    def render(row: Row) -> bytes:
        occ, cached, cal, uid, event_id = row
        e = occ.event
        deleted, last_modified = cached.deleted, cached.last_modified  # read once: key = JSON
        times = (
            None
            if occ.original_start is None and occ.start is e.start and occ.end is e.end
            else (occ.start, occ.end, occ.original_start is not None)
        )
        key = (
            id(e),
            times,
            occ.instance_id,
            uid,
            event_id,
            deleted,
            last_modified,
            cal.calendar_id,
            cal.native_id,
            options,
        )
        memo = cached.rendered
        if cached.rendered_for is not cached.native:
            memo = cached.rendered = {}
            cached.rendered_for = cached.native
        hit = memo.get(key)
        if hit is not None and hit[0] is e:
            return hit[1]
        body = encode_json(row_json(row, deleted, last_modified))
        if len(memo) >= _MEMO_CAP:
            memo.clear()
        memo[key] = (e, body)
        return body

    return render
