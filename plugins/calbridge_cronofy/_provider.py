"""The Cronofy provider: identity, calendars, events, free/busy and push channels.

Settings and OAuth live in :mod:`._base` (see its docstring for every option).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    NotSupported,
    SyncCursorExpired,
)

from . import _convert as convert
from . import _push
from ._base import PROVIDER, CronofyBase
from ._base import seg as _seg
from ._shards import REACH, merge, split_window
from ._wire import ChannelWire, CronofyCalendar, Profile, UserInfo, parse
from ._wire_read import EventsPage, decode_event, decode_page

__all__ = ["CronofyProvider"]

#: pages whose wait decides whether a long read is split (see ``list_events``)
_IDLE_SAMPLES = 2

_PARTICIPATION = {
    calbridge.ResponseStatus.ACCEPTED: "accepted",
    calbridge.ResponseStatus.TENTATIVE: "tentative",
    calbridge.ResponseStatus.DECLINED: "declined",
}
_FREE_BUSY = {
    "busy": calbridge.FreeBusyStatus.BUSY,
    "tentative": calbridge.FreeBusyStatus.TENTATIVE,
    "unknown": calbridge.FreeBusyStatus.UNAVAILABLE,
}


def _events_page(response: httpx.Response) -> tuple[EventsPage, str | None]:
    page = decode_page(response.content)
    return page, page.pages.next_page or None


def _upserted(event: calbridge.Event) -> calbridge.Change:
    return calbridge.Change(
        kind=calbridge.ChangeKind.UPSERTED,
        calendar_id=event.calendar_id,
        event_id=event.id,
        event=event,
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


class CronofyProvider(CronofyBase):
    """Cronofy's calendar API (Individual and Enterprise Connect, events, push channels)."""

    name = PROVIDER
    capabilities = calbridge.Capabilities(
        push=True,
        incremental_sync=True,
        free_busy=True,
        write=True,
        idempotent_create=True,
        server_side_expansion=True,
        pkce=False,
        rotating_refresh_tokens=False,
        channel_expiry=False,
    )

    # -- identity -----------------------------------------------------------------------

    async def userinfo(self, session: calbridge.Session) -> UserInfo:
        """``GET /v1/userinfo``: the account, its authorization and profiles."""
        response = await self._call(session, "GET", f"{self.hosts.api}/v1/userinfo")
        return parse(self._json(response), UserInfo)

    async def list_profiles(self, session: calbridge.Session) -> list[Profile]:
        """``GET /v1/profiles``: linked calendar accounts, ``profile_connected`` and relink URL."""
        response = await self._call(session, "GET", f"{self.hosts.api}/v1/profiles")
        data = self._json(response)
        return [parse(p, Profile) for p in data.get("profiles", [])]

    async def revoke_profile(self, session: calbridge.Session, profile_id: str) -> None:
        """Disconnect one profile (``POST /v1/profiles/{id}/revoke``)."""
        await self._call(session, "POST", f"{self.hosts.api}/v1/profiles/{_seg(profile_id)}/revoke")

    # -- calendars ----------------------------------------------------------------------

    async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
        """Every calendar of every profile (deleted calendars are left out)."""
        response = await self._call(session, "GET", f"{self.hosts.api}/v1/calendars")
        out = []
        for raw in self._json(response).get("calendars", []):
            cal = parse(raw, CronofyCalendar)
            if not cal.calendar_deleted:
                out.append(convert.calendar_from_wire(cal, raw))
        return out

    async def create_calendar(
        self, session: calbridge.Session, profile_id: str, name: str
    ) -> calbridge.Calendar:
        """Create a calendar in a profile; a duplicate name raises InvalidRequest (422)."""
        response = await self._call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars",
            body={"profile_id": profile_id, "name": name},
        )
        raw = self._json(response).get("calendar")
        return convert.calendar_from_wire(parse(raw, CronofyCalendar), raw)

    # -- reads --------------------------------------------------------------------------

    def _read_params(
        self,
        calendar_ids: Sequence[str],
        window: calbridge.TimeRange | None,
        **flags: bool | str,
    ) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = [("tzid", "Etc/UTC")]
        if window is not None:
            params += [
                ("from", convert.format_instant(window.start)),
                ("to", convert.format_instant(window.end)),
            ]
        params += [("calendar_ids[]", c) for c in calendar_ids]
        params += [(k, _bool(v) if isinstance(v, bool) else v) for k, v in flags.items()]
        return params

    async def read_events(
        self,
        session: calbridge.Session,
        *,
        calendar_ids: Sequence[str] = (),
        window: calbridge.TimeRange | None = None,
        last_modified: str | dt.datetime | None = None,
        include_deleted: bool = False,
        include_managed: bool = True,
        include_moved: bool = False,
        only_managed: bool = False,
        google_event_ids: bool | None = None,
    ) -> AsyncIterator[list[Mapping[str, Any]]]:
        """Cronofy's Read Events with every parameter, page by page as JSON objects.

        The lower-level door behind :meth:`list_events` and :meth:`changes`. Each event is
        a :class:`calbridge.RawPayload`: a read-only mapping over the event's JSON text,
        decoded the first time it is read.
        """
        pages = self._read_pages(
            session,
            calendar_ids=calendar_ids,
            window=window,
            last_modified=last_modified,
            include_deleted=include_deleted,
            include_managed=include_managed,
            include_moved=include_moved,
            only_managed=only_managed,
            google_event_ids=google_event_ids,
        )
        async for page in pages:
            yield [calbridge.RawPayload(text, PROVIDER) for text in page.events]

    def _read_pages(
        self,
        session: calbridge.Session,
        *,
        calendar_ids: Sequence[str],
        window: calbridge.TimeRange | None,
        last_modified: str | dt.datetime | None = None,
        include_deleted: bool = False,
        include_managed: bool = True,
        include_moved: bool = False,
        only_managed: bool = False,
        google_event_ids: bool | None = None,
    ) -> AsyncGenerator[EventsPage, None]:
        """Read Events pages, each event still its JSON text (see :func:`decode_event`)."""
        flags: dict[str, bool | str] = {
            "include_managed": include_managed,
            "include_deleted": include_deleted,
            "include_moved": include_moved,
            "localized_times": self._localized,
        }
        if only_managed:
            flags["only_managed"] = True
        if self._google_ids if google_event_ids is None else google_event_ids:
            flags["google_event_ids"] = True
        if last_modified is not None:
            flags["last_modified"] = (
                convert.format_instant(last_modified)
                if isinstance(last_modified, dt.datetime)
                else last_modified
            )
        params = self._read_params(calendar_ids, window, **flags)
        return self._pages(session, f"{self.hosts.api}/v1/events", params, _events_page)

    async def list_events(
        self,
        session: calbridge.Session,
        calendar_id: str,
        window: calbridge.TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[calbridge.Event]]:
        """Events overlapping ``window``, one Cronofy page at a time (Cronofy sizes pages).

        When the first page says the read runs to at least ``shard_min_pages`` pages and
        waiting for each of the next two, once the page before is converted, leaves this
        process idle for at least ``shard_min_wait`` seconds (Cronofy is slower to answer
        than this process to convert, and works elsewhere, not on its CPU), the
        window is read again as up to ``read_concurrency`` sub-windows at once (see
        ``_shards``): every event still comes exactly once, pages of different sub-windows
        interleave, and at most a few pages per sub-window are held.
        """
        async with contextlib.aclosing(
            self._read_pages(session, calendar_ids=(calendar_id,), window=window)
        ) as pages:
            first = await anext(pages, None)
            if first is None:
                return
            k = self._shard_count(first.pages.total)
            done: list[tuple[calbridge.Event, ...]] = []  # pages converted meanwhile
            pending: EventsPage | None = first  # a page fetched, not yet converted
            if k >= 2 and self._shard_min_wait > 0:  # 0: split every long read
                # split only when one chain leaves this process waiting. The next page is
                # requested before the current one comes out, so convert the current one
                # first (as one chain would); the wall time the next one still takes,
                # less the CPU time this process spent meanwhile (reading the answer, or
                # an in-process provider working), is time spent idle on the provider.
                # A provider that answers within the time a page takes to convert is
                # hidden by the prefetch already, and more chains would only add requests.
                # Both of two pages must leave it idle: one late answer is not a slow
                # provider.
                for _ in range(_IDLE_SAMPLES):
                    assert pending is not None
                    done.append(tuple(convert.events_from_page(pending)))
                    began, cpu = time.monotonic(), time.process_time()
                    pending = await anext(pages, None)
                    idle = (time.monotonic() - began) - (time.process_time() - cpu)
                    if pending is None or idle < self._shard_min_wait:
                        k = 1
                        break
            if k < 2:
                for converted in done:
                    yield converted
                if pending is not None:
                    yield tuple(convert.events_from_page(pending))
                async for page in pages:
                    yield tuple(convert.events_from_page(page))
                return
        # the chain is closed (its prefetch stopped); the sub-windows read its events again
        del first, done, pending
        parts = split_window(window, k)
        sources = [
            self._sub_window(session, calendar_id, part, first=i == 0)
            for i, part in enumerate(parts)
        ]
        # pages travel still encoded (the smallest form); each is converted when taken
        async with contextlib.aclosing(merge(sources, buffer=1)) as merged:
            async for page, since in merged:
                events = convert.events_from_page(page, since=since)
                if events:
                    yield tuple(events)

    def _shard_count(self, total_pages: int) -> int:
        if self._read_concurrency < 2 or total_pages < self._shard_min_pages:
            return 1
        return min(self._read_concurrency, max(2, total_pages // 2))

    async def _sub_window(
        self,
        session: calbridge.Session,
        calendar_id: str,
        part: calbridge.TimeRange,
        *,
        first: bool,
    ) -> AsyncIterator[tuple[EventsPage, dt.datetime | None]]:
        """One sub-window's pages, with the instant before which its events belong to an
        earlier sub-window (None for the first, which keeps everything)."""
        since = None if first else part.start
        query = part if first else calbridge.TimeRange(start=part.start - REACH, end=part.end)
        async for page in self._read_pages(session, calendar_ids=(calendar_id,), window=query):
            yield page, since

    async def changes(
        self,
        session: calbridge.Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: calbridge.TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[calbridge.ChangePage]:
        """Changes since ``cursor`` (a ``last_modified`` time), or a full read without one.

        The new cursor is the time the read started, minus ``cursor_margin_seconds``
        (so changes landing during the read come again next time rather than never).
        """
        since: dt.datetime | None = None
        if cursor is not None:
            try:
                since = convert.parse_instant(cursor)
            except ValueError:
                raise SyncCursorExpired(
                    f"{cursor!r} is not a Cronofy cursor", provider=PROVIDER
                ) from None
        started = self._now() - dt.timedelta(seconds=self._margin)
        next_cursor = convert.format_instant(started)
        full = since is None
        batches = (
            self._full_read(session, calendar_id, window)
            if full and window is not None  # what list_events reads: long ones split
            else self._changed(session, calendar_id, window, since)
        )
        buffered: calbridge.ChangePage | None = None
        async for changes in batches:
            if buffered is not None:
                yield buffered
            buffered = calbridge.ChangePage(changes=changes, full=full)
        last = buffered or calbridge.ChangePage(changes=(), full=full)
        yield calbridge.ChangePage(changes=last.changes, cursor=next_cursor, full=full)

    async def _full_read(
        self, session: calbridge.Session, calendar_id: str, window: calbridge.TimeRange
    ) -> AsyncIterator[tuple[calbridge.Change, ...]]:
        async for events in self.list_events(session, calendar_id, window):
            yield tuple(_upserted(ev) for ev in events)

    async def _changed(
        self,
        session: calbridge.Session,
        calendar_id: str,
        window: calbridge.TimeRange | None,
        since: dt.datetime | None,
    ) -> AsyncIterator[tuple[calbridge.Change, ...]]:
        """Changes page by page: deleted events as deletions (full reads leave them out)."""
        full = since is None
        pages = self._read_pages(
            session,
            calendar_ids=(calendar_id,),
            window=window,
            last_modified=since,
            include_deleted=not full,
            include_moved=not full,
        )
        async for page in pages:
            changes = []
            for text in page.events:
                wire = decode_event(text)
                if not wire.deleted:
                    raw = calbridge.RawPayload(text, PROVIDER)
                    changes.append(_upserted(convert.event_from_read(wire, raw)))
                elif not full:
                    changes.append(
                        calbridge.Change(
                            kind=calbridge.ChangeKind.DELETED,
                            calendar_id=wire.calendar_id or calendar_id,
                            event_id=convert.read_event_id(wire),
                        )
                    )
            yield tuple(changes)

    async def free_busy(
        self,
        session: calbridge.Session,
        calendar_ids: Sequence[str],
        window: calbridge.TimeRange,
    ) -> list[calbridge.FreeBusy]:
        """Busy, tentative and unknown blocks (free blocks are left out), app events included."""
        params = self._read_params(calendar_ids, window, include_managed=True)
        out: list[calbridge.FreeBusy] = []
        url = f"{self.hosts.api}/v1/free_busy"
        async for data in self._pages(session, url, params, self._json_page):
            for block in data.get("free_busy", []):
                status = _FREE_BUSY.get(block.get("free_busy_status", "busy"))
                if status is None:
                    continue
                start = convert.time_from_wire(block["start"]).as_utc()
                end = convert.time_from_wire(block["end"]).as_utc()
                out.append(
                    calbridge.FreeBusy(
                        calendar_id=block["calendar_id"], start=start, end=end, status=status
                    )
                )
        return out

    # -- writes -------------------------------------------------------------------------

    async def _upsert(
        self,
        session: calbridge.Session,
        calendar_id: str,
        event_id: str,
        draft: calbridge.EventDraft,
    ) -> calbridge.Event:
        field = convert.id_field(event_id)
        body = convert.upsert_body(draft, default_tzid=self._default_tzid, **{field: event_id})
        await self._call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events",
            body=body,
            idempotent=True,
        )
        return convert.event_from_draft(
            draft, event_id=event_id, calendar_id=calendar_id, body=body
        )

    async def create_event(
        self,
        session: calbridge.Session,
        calendar_id: str,
        draft: calbridge.EventDraft,
        *,
        idempotency_key: str,
    ) -> calbridge.Event:
        """Upsert a managed event whose ``event_id`` is ``idempotency_key``.

        Cronofy answers 202 with no body and applies the write later; the returned event
        is built from the draft and has the id later reads will show.
        """
        if not idempotency_key or idempotency_key.startswith(convert.UID_PREFIX):
            raise InvalidRequest(
                "the idempotency key becomes Cronofy's event_id: it must be non-empty and "
                f"must not start with {convert.UID_PREFIX!r} (Cronofy's event_uid prefix)",
                provider=PROVIDER,
                status=None,
            )
        return await self._upsert(session, calendar_id, idempotency_key, draft)

    async def update_event(
        self,
        session: calbridge.Session,
        calendar_id: str,
        event_id: str,
        draft: calbridge.EventDraft,
        *,
        etag: str | None = None,
    ) -> calbridge.Event:
        """Upsert again: by ``event_id`` for the app's events, ``event_uid`` for others.

        Cronofy has no etags; passing one raises NotSupported rather than being ignored.
        """
        if etag is not None:
            raise NotSupported(
                "etag", provider=PROVIDER, message="Cronofy has no etags; update without one"
            )
        return await self._upsert(session, calendar_id, event_id, draft)

    async def delete_event(
        self, session: calbridge.Session, calendar_id: str, event_id: str
    ) -> None:
        """Delete by ``event_id`` or ``event_uid``; deleting a gone event succeeds."""
        # Cronofy answers 202 for an unknown event; 404 means the calendar is unknown
        await self._call(
            session,
            "DELETE",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events",
            body={convert.id_field(event_id): event_id},
        )

    async def change_participation_status(
        self,
        session: calbridge.Session,
        calendar_id: str,
        event_uid: str,
        status: calbridge.ResponseStatus,
    ) -> None:
        """Answer an invitation: accepted, tentative or declined (needs the ``event_uid``)."""
        if status not in _PARTICIPATION:
            raise InvalidRequest(
                f"participation status must be accepted, tentative or declined, not {status}",
                provider=PROVIDER,
                status=None,
            )
        await self._call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events/{_seg(event_uid)}"
            "/participation_status",
            body={"status": _PARTICIPATION[status]},
            idempotent=True,
        )

    # -- push ---------------------------------------------------------------------------

    async def subscribe(
        self, session: calbridge.Session, request: calbridge.ChannelRequest
    ) -> calbridge.Channel:
        """Create a channel (Cronofy answers an identical request with the existing one).

        ``request.filters`` may set ``only_managed`` to ``"true"``.
        """
        filters: dict[str, Any] = {}
        if request.calendar_ids:
            filters["calendar_ids"] = list(request.calendar_ids)
        only_managed = str(request.filters.get("only_managed", "")).lower()
        if only_managed in ("true", "1", "yes"):
            filters["only_managed"] = True
        body: dict[str, Any] = {"callback_url": request.callback_url}
        if filters:
            body["filters"] = filters
        response = await self._call(
            session, "POST", f"{self.hosts.api}/v1/channels", body=body, idempotent=True
        )
        raw = self._json(response).get("channel")
        return convert.channel_from_wire(
            parse(raw, ChannelWire), raw, account_id=session.account.id
        )

    async def list_channels(self, session: calbridge.Session) -> list[calbridge.Channel]:
        """The account's open channels."""
        response = await self._call(session, "GET", f"{self.hosts.api}/v1/channels")
        return [
            convert.channel_from_wire(parse(raw, ChannelWire), raw, account_id=session.account.id)
            for raw in self._json(response).get("channels", [])
        ]

    async def renew(
        self, session: calbridge.Session, channel: calbridge.Channel
    ) -> calbridge.Channel:
        """Cronofy channels do not expire; this re-creates the same channel (idempotent),
        which reopens it if Cronofy closed it after 24 hours of failed deliveries."""
        return await self.subscribe(
            session,
            calbridge.ChannelRequest(
                callback_url=channel.callback_url,
                calendar_ids=channel.calendar_ids,
                filters=channel.filters,
            ),
        )

    async def unsubscribe(self, session: calbridge.Session, channel: calbridge.Channel) -> None:
        """Close a channel; one already closed is fine."""
        with contextlib.suppress(NotFound):
            await self._call(session, "DELETE", f"{self.hosts.api}/v1/channels/{_seg(channel.id)}")

    async def verify_notification(
        self, request: calbridge.WebhookRequest, channels: calbridge.ChannelLookup
    ) -> list[calbridge.Notification]:
        """Check ``Cronofy-HMAC-SHA256`` against the raw body, then parse (no Cronofy call)."""
        return await _push.verify(request, channels, self.notification_secrets())
