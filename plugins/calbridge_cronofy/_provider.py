"""The Cronofy provider: identity, calendars, events, free/busy, push channels and OAuth
(Individual and Enterprise Connect: see ``_oauth``).

Settings (``ProviderSettings``):

* ``client_id`` / ``client_secret``: the application's OAuth credentials; the secret also
  verifies push notifications.
* ``base_urls``: ``{"api": ..., "app": ...}`` overrides the hosts (sandbox).
* options:

  - ``data_center``: ``us`` (default), ``uk``, ``de``, ``au``, ``ca`` or ``sg``
    (``data_centre`` is accepted too).
  - ``client_secrets``: more secrets to accept on notifications (during a rotation).
  - ``default_tzid``: the zone floating times are placed in (default ``Etc/UTC``).
  - ``localized_times``: read start/end with their time zones (default True).
  - ``google_event_ids``: ask for ``google_event_id`` on Google-backed events, kept in
    ``Event.raw`` (default True: it ties Cronofy events to the ids of a Google migration).
  - ``cursor_margin_seconds``: how far before a read's start its cursor points (default 120).
  - ``clock``: a callable returning Cronofy's current time as an aware datetime (the
    sandbox's clock in tests); defaults to the system clock.
  - ``rate_limit_per_second`` / ``rate_limit_per_minute``: the client-side limiter
    (Cronofy's documented 50 and 500 per application; 0 turns one off), its windows
    lengthened by ``rate_limit_margin`` (default 0.05) so requests that arrive at
    Cronofy with uneven delays stay inside Cronofy's windows; or
    ``rate_limiters``: the :class:`calbridge.RateLimiter` instances to use instead (share
    them between providers of one application).
  - ``retry``: a :class:`calbridge.RetryPolicy`.
  - ``prefetch``: fetch the next page while the current one is consumed (default True).
  - ``read_concurrency``: how many sub-windows a long ``list_events`` read is split into
    and read at once (default 4; 1 reads every window as one chain of pages).
  - ``shard_min_pages``: how many pages (Cronofy's ``pages.total`` on the first page) make
    a read long enough to split (default 4). Every read that long is split: across a
    network (20 ms a request) the sub-windows read 2.9 times as fast as one chain; on
    loopback, where Cronofy's sandbox answers within the time a page takes to convert,
    one chain is as fast (``read_concurrency=1`` keeps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import httpx

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderResponseError,
    SyncCursorExpired,
)
from calbridge.toolkit import AuthorizedClient, describe

from . import _convert as convert
from . import _push
from ._errors import error_for
from ._hosts import Hosts, hosts_for
from ._oauth import (
    DEFAULT_SCOPES,
    ENTERPRISE_SCOPES,
    ServiceAccountAuthorization,
    grant_from,
    make_oauth,
)
from ._push import AuthorizationCallback
from ._shards import REACH, merge, split_window
from ._wire import (
    ChannelWire,
    CronofyCalendar,
    EventsPage,
    Profile,
    UserInfo,
    decode_event,
    decode_page,
    parse,
)

__all__ = ["CronofyProvider"]

PROVIDER = "cronofy"
P = TypeVar("P")

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


def _seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return urllib.parse.quote(value, safe="")


class CronofyProvider(calbridge.Provider):
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
    default_scopes: ClassVar[tuple[str, ...]] = DEFAULT_SCOPES

    def __init__(self, *, http: httpx.AsyncClient, settings: calbridge.ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        dc = settings.option("data_center", settings.option("data_centre"))
        self.hosts: Hosts = hosts_for(dc, settings.base_urls)
        api = httpx.URL(self.hosts.api)
        self._api_origin = (api.scheme, api.host, api.port)
        #: "scheme://host[:port]/": a next_page starting so is on the API host for sure
        self._api_prefix = f"{api.scheme}://{api.netloc.decode('ascii')}/"
        self._default_tzid = str(settings.option("default_tzid", "Etc/UTC"))
        self._localized = bool(settings.option("localized_times", True))
        self._google_ids = bool(settings.option("google_event_ids", True))
        self._margin = float(settings.option("cursor_margin_seconds", 120))
        self._clock: Callable[[], dt.datetime] | None = settings.option("clock")
        self._prefetch = bool(settings.option("prefetch", True))
        self._read_concurrency = max(1, int(settings.option("read_concurrency", 4)))
        self._shard_min_pages = max(2, int(settings.option("shard_min_pages", 4)))
        given: Sequence[calbridge.RateLimiter] | None = settings.option("rate_limiters")
        margin = float(settings.option("rate_limit_margin", 0.05))
        self._limiters: list[calbridge.RateLimiter] = (
            list(given)
            if given is not None
            else [
                calbridge.RateLimiter(limit=int(limit), period=period * (1 + margin))
                for limit, period in (
                    (settings.option("rate_limit_per_second", 50), 1.0),
                    (settings.option("rate_limit_per_minute", 500), 60.0),
                )
                if limit
            ]
        )
        #: the API's calls and the token endpoint's, paced by ``_limiters``
        self.cronofy = AuthorizedClient(
            http=http,
            provider=PROVIDER,
            errors=error_for,
            policy=settings.option("retry") or calbridge.RetryPolicy(),
            limiters=self._limiters,
        )
        self.oauth = make_oauth(self.cronofy, settings, self.hosts)

    # -- plumbing ---------------------------------------------------------------------

    def notification_secrets(self) -> list[calbridge.Secret]:
        """Every client secret a notification may be signed with."""
        extra: Iterable[Any] = self.settings.option("client_secrets") or ()
        out = [self.settings.client_secret] if self.settings.client_secret else []
        for value in extra:
            out.append(value if isinstance(value, calbridge.Secret) else calbridge.Secret(value))
        return out

    def _now(self) -> dt.datetime:
        if self._clock is not None:
            return self._clock().astimezone(dt.UTC)
        return dt.datetime.now(dt.UTC)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        return calbridge.read_json(response, provider=PROVIDER, what=describe(response.request))

    @classmethod
    def _json_page(cls, response: httpx.Response) -> tuple[Any, str | None]:
        """A page as decoded JSON, and its ``pages.next_page``."""
        data = cls._json(response)
        pages = data.get("pages") if isinstance(data, Mapping) else None
        next_url = pages.get("next_page") if isinstance(pages, Mapping) else None
        return data, next_url or None

    async def _pages(
        self,
        session: calbridge.Session,
        url: str,
        params: Any,
        decode: Callable[[httpx.Response], tuple[P, str | None]],
    ) -> AsyncGenerator[P, None]:
        """Decoded pages, following absolute ``pages.next_page`` URLs with no parameters.

        ``decode`` reads one response into (page, next page URL or None). With ``prefetch``
        the next page is requested, and its request written to the connection, before the
        current page is handed out, so Cronofy works while the caller converts; at most
        two pages are held.
        """

        async def fetch(link: str | None, sent: asyncio.Future[None] | None) -> tuple[P, Any]:
            if link is None:
                return decode(await self.cronofy.call(session, "GET", url, params=params))
            return decode(await self.cronofy.call(session, "GET", link, sent=sent))

        def next_ref(page: tuple[P, Any]) -> str | None:
            link = page[1]
            if not link:
                return None
            self._check_origin(link)  # before the page that names it comes out
            return str(link)

        pages = calbridge.prefetched_pages(fetch, next_ref, prefetch=self._prefetch)
        async with contextlib.aclosing(pages):
            async for page, _link in pages:
                yield page

    def _check_origin(self, url: Any) -> None:
        """The bearer token goes only to the API host: a ``next_page`` elsewhere is refused."""
        if isinstance(url, str) and url.startswith(self._api_prefix) and "@" not in url:
            return  # the usual case, without parsing the URL (the request parses it anyway)
        try:
            target = httpx.URL(str(url))
        except (httpx.InvalidURL, TypeError, ValueError):
            target = None
        if target is None or (target.scheme, target.host, target.port) != self._api_origin:
            raise ProviderResponseError(
                "pages.next_page points outside the Cronofy API host; not following it",
                provider=PROVIDER,
            )

    async def initial_sync_required(self, session: calbridge.Session) -> bool | None:
        """Whether Cronofy still runs its first sync of the account's calendar profiles
        (``GET /v1/userinfo``, ``profile_initial_sync_required``); the migration's
        initial-sync guard asks this until ``profile_initial_sync_completed`` arrives."""
        response = await self.cronofy.call(session, "GET", f"{self.hosts.api}/v1/userinfo")
        return parse(self._json(response), UserInfo).initial_sync_required

    # -- OAuth: Individual Connect ------------------------------------------------------

    def authorization_url(self, request: calbridge.AuthorizationRequest) -> str:
        """``https://app[-dc].cronofy.com/oauth/authorize?...`` (note: the app host).

        ``request.extra`` may carry ``avoid_linking``, ``provider_name``, ``link_token``,
        ``locale`` and ``delegated_scope``; they are passed on as given.
        """
        return self.oauth.authorization_url(request, scopes=self.default_scopes)

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> calbridge.TokenGrant:
        """Trade a code for tokens; ``sub``, ``account_id`` and ``linking_profile`` are kept."""
        return grant_from(await self.oauth.exchange(code=code, redirect_uri=redirect_uri))

    async def refresh_tokens(self, tokens: calbridge.TokenSet) -> calbridge.TokenSet:
        """Refresh; Cronofy may return the same refresh token (the old one is kept if none)."""
        return await self.oauth.refresh(tokens)

    async def revoke_tokens(self, tokens: calbridge.TokenSet) -> None:
        """Revoke the authorization, with the refresh token (the access token may be expired)."""
        await self.oauth.revoke(tokens)

    # -- OAuth: Enterprise Connect -------------------------------------------------------

    def enterprise_connect_url(
        self,
        request: calbridge.AuthorizationRequest,
        *,
        delegated_scope: Sequence[str] = ("read_write",),
    ) -> str:
        """The admin's consent URL for a service account (app host).

        ``request.scopes`` defaults to ``service_account/accounts/manage``; exchange the
        returned code with :meth:`exchange_code` as usual.
        """
        return self.oauth.authorization_url(
            request,
            scopes=ENTERPRISE_SCOPES,
            params={"delegated_scope": " ".join(delegated_scope)},
            url=f"{self.hosts.app}/enterprise_connect/oauth/authorize",
        )

    async def authorize_accounts(
        self,
        session: calbridge.Session,
        requests: Sequence[ServiceAccountAuthorization],
    ) -> None:
        """Ask Cronofy to authorize users through the service account (``session``).

        Cronofy later calls each ``callback_url`` with a ``code``; trade it with
        :meth:`exchange_service_account_code`.
        """
        if not requests:
            return
        body: Any = (
            dict(requests[0])
            if len(requests) == 1
            else {"service_account_authorizations": [dict(r) for r in requests]}
        )
        await self.cronofy.call(
            session, "POST", f"{self.hosts.api}/v1/service_account_authorizations", json=body
        )

    def authorization_callback(self, request: calbridge.WebhookRequest) -> AuthorizationCallback:
        """Verify and parse what Cronofy POSTed to an Enterprise Connect ``callback_url``.

        Signed like notifications (``Cronofy-HMAC-SHA256``); raises NotificationRejected when
        forged. The result has ``code`` (exchange it with
        :meth:`exchange_service_account_code`) or ``error``/``error_key`` (e.g. the user is
        outside the service account's domain).
        """
        return _push.authorization_callback(request, self.notification_secrets())

    async def exchange_service_account_code(
        self, *, code: str, callback_url: str
    ) -> calbridge.TokenGrant:
        """Trade the code Cronofy sent to ``callback_url`` (which is the redirect_uri)."""
        return await self.exchange_code(code=code, redirect_uri=callback_url)

    # -- identity -----------------------------------------------------------------------

    async def userinfo(self, session: calbridge.Session) -> UserInfo:
        """``GET /v1/userinfo``: the account, its authorization and profiles."""
        response = await self.cronofy.call(session, "GET", f"{self.hosts.api}/v1/userinfo")
        return parse(self._json(response), UserInfo)

    async def list_profiles(self, session: calbridge.Session) -> list[Profile]:
        """``GET /v1/profiles``: linked calendar accounts, ``profile_connected`` and relink URL."""
        response = await self.cronofy.call(session, "GET", f"{self.hosts.api}/v1/profiles")
        data = self._json(response)
        return [parse(p, Profile) for p in data.get("profiles", [])]

    async def revoke_profile(self, session: calbridge.Session, profile_id: str) -> None:
        """Disconnect one profile (``POST /v1/profiles/{id}/revoke``)."""
        await self.cronofy.call(
            session, "POST", f"{self.hosts.api}/v1/profiles/{_seg(profile_id)}/revoke"
        )

    # -- calendars ----------------------------------------------------------------------

    async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
        """Every calendar of every profile (deleted calendars are left out)."""
        response = await self.cronofy.call(session, "GET", f"{self.hosts.api}/v1/calendars")
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
        response = await self.cronofy.call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars",
            json={"profile_id": profile_id, "name": name},
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

        When the first page says the read runs to at least ``shard_min_pages`` pages, the
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
            if k < 2:
                yield tuple(convert.events_from_page(first))
                async for page in pages:
                    yield tuple(convert.events_from_page(page))
                return
        # the chain is closed (its prefetch stopped); the sub-windows read its events again
        del first
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
        await self.cronofy.call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events",
            json=body,
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
        await self.cronofy.call(
            session,
            "DELETE",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events",
            json={convert.id_field(event_id): event_id},
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
        await self.cronofy.call(
            session,
            "POST",
            f"{self.hosts.api}/v1/calendars/{_seg(calendar_id)}/events/{_seg(event_uid)}"
            "/participation_status",
            json={"status": _PARTICIPATION[status]},
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
        response = await self.cronofy.call(
            session, "POST", f"{self.hosts.api}/v1/channels", json=body, idempotent=True
        )
        raw = self._json(response).get("channel")
        return convert.channel_from_wire(
            parse(raw, ChannelWire), raw, account_id=session.account.id
        )

    async def list_channels(self, session: calbridge.Session) -> list[calbridge.Channel]:
        """The account's open channels."""
        response = await self.cronofy.call(session, "GET", f"{self.hosts.api}/v1/channels")
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
            await self.cronofy.call(
                session, "DELETE", f"{self.hosts.api}/v1/channels/{_seg(channel.id)}"
            )

    async def verify_notification(
        self, request: calbridge.WebhookRequest, channels: calbridge.ChannelLookup
    ) -> list[calbridge.Notification]:
        """Check ``Cronofy-HMAC-SHA256`` against the raw body, then parse (no Cronofy call)."""
        return await _push.verify(request, channels, self.notification_secrets())
