"""The Google Calendar v3 provider.

Settings (``ProviderSettings``):

* ``client_id`` / ``client_secret``: the OAuth client.
* ``base_urls``: ``api`` (default ``https://www.googleapis.com``; the calendar API is
  ``{api}/calendar/v3``), ``accounts`` (default ``https://accounts.google.com``; consent at
  ``{accounts}/o/oauth2/v2/auth``) and ``oauth2`` (default ``https://oauth2.googleapis.com``;
  ``{oauth2}/token`` and ``{oauth2}/revoke``). A sandbox serves all three under one prefix,
  so ``{"api": url, "accounts": url, "oauth2": url}`` with ``url = .../google``.
* ``options``: ``page_size`` (events.list ``maxResults``, default 250, max 2500),
  ``default_time_zone`` (zone for floating times and all-day series, default ``UTC``),
  ``expand_changes`` (sync expanded instances instead of masters and exceptions; default
  false).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

import calbridge
from calbridge import (
    Account,
    AuthorizationRequest,
    Calendar,
    Capabilities,
    Change,
    ChangeKind,
    ChangePage,
    Channel,
    ChannelLookup,
    ChannelRequest,
    Event,
    EventDraft,
    FreeBusy,
    FreeBusyStatus,
    Notification,
    Provider,
    ProviderSettings,
    RetryPolicy,
    Session,
    StaticTokenSource,
    TimeRange,
    TokenGrant,
    TokenSet,
    WebhookRequest,
)
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    ProviderResponseError,
)
from calbridge.toolkit import AuthorizedClient

from . import _push
from ._convert import (
    calendar_from_wire,
    client_event_id,
    event_from_wire,
    event_to_wire,
    format_datetime,
    is_tombstone,
    parse_datetime,
)
from ._errors import error_for, should_retry, sync_error_for
from ._oauth import AUTHORIZATION_PARAMS, claims_of, grant, make_oauth
from ._wire import CalendarListEntry, event_struct, parse

__all__ = ["GoogleProvider"]

SCOPE_CALENDAR = "https://www.googleapis.com/auth/calendar"
MAX_PAGE = 2500
_EPS = dt.timedelta(seconds=1)


class GoogleProvider(Provider):
    """Google Calendar through the calendar v3 REST API."""

    name = "google"
    capabilities = Capabilities(
        push=True,
        incremental_sync=True,
        free_busy=True,
        write=True,
        idempotent_create=True,
        server_side_expansion=True,
        pkce=True,
        rotating_refresh_tokens=False,
        channel_expiry=True,
    )
    default_scopes: ClassVar[tuple[str, ...]] = ("openid", "email", SCOPE_CALENDAR)
    #: how calls are retried (tests may lower it)
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(self, *, http: httpx.AsyncClient, settings: ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        urls = settings.base_urls
        api = urls.get("api", "https://www.googleapis.com").rstrip("/")
        accounts = urls.get("accounts", "https://accounts.google.com").rstrip("/")
        oauth2 = urls.get("oauth2", "https://oauth2.googleapis.com").rstrip("/")
        self.api_base = f"{api}/calendar/v3"
        self.clock: Callable[[], float] = time.time
        #: the calendar API's calls (and the token endpoint's)
        self.google = AuthorizedClient(
            http=http,
            provider=self.name,
            errors=error_for,
            policy=self.retry_policy,
            retry_also=should_retry,
        )
        self.oauth = make_oauth(
            self.google, settings, accounts=accounts, oauth2=oauth2, clock=self._now
        )
        self.page_size = min(MAX_PAGE, int(settings.option("page_size", 250)))
        self.default_tz = str(settings.option("default_time_zone", "UTC"))
        self.expand_changes = bool(settings.option("expand_changes", False))

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    def _url(self, *parts: str) -> str:
        return "/".join([self.api_base, *(quote(p, safe="") for p in parts)])

    async def _ok(
        self,
        session: Session,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        sync: bool = False,
        sent: asyncio.Future[None] | None = None,
    ) -> Any:
        """The answer's JSON object (None for an empty answer); failures raised mapped."""
        data = await self.google.call_json(
            session, method, url, what=what, errors=sync_error_for if sync else None,
            params=params, json=json, headers=headers, idempotent=idempotent, sent=sent,
        )  # fmt: skip
        if data is not None and not isinstance(data, dict):
            raise ProviderResponseError(f"{what}: expected a JSON object", provider=self.name)
        return data

    def _event(self, data: Any, calendar_id: str) -> Event:
        wire = event_struct(data)
        return event_from_wire(wire, calendar_id, dict(data))

    # -- OAuth -------------------------------------------------------------------------

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """Consent URL with offline access, ``prompt=consent``, PKCE S256 and state."""
        return self.oauth.authorization_url(
            request, scopes=self.default_scopes, params=AUTHORIZATION_PARAMS
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """Trade the code; the account is Google's ``sub`` (or the primary calendar's id)."""
        answer = await self.oauth.exchange(
            code=code, redirect_uri=redirect_uri, code_verifier=code_verifier
        )
        tokens, claims = answer.tokens, claims_of(answer.body)
        email: str | None = None
        if not claims.get("sub") or not claims.get("email"):
            session = Session(
                account=Account(app_user_id="", provider=self.name, provider_account_id=""),
                tokens=StaticTokenSource(tokens),
            )
            primary = await self._ok(
                session,
                "GET",
                self._url("users", "me", "calendarList", "primary"),
                what="calendarList.get primary",
            )
            email = primary.get("id") if isinstance(primary, dict) else None
        return grant(tokens, claims, email)

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """Refresh; a response without ``refresh_token`` keeps the stored one."""
        return await self.oauth.refresh(tokens)

    async def revoke_tokens(self, tokens: TokenSet) -> None:
        """Revoke at Google (already revoked counts as done)."""
        await self.oauth.revoke(tokens)

    # -- reads -------------------------------------------------------------------------

    async def list_calendars(self, session: Session) -> list[Calendar]:
        """calendarList.list, every page; deleted entries are left out."""
        out: list[Calendar] = []
        page_token: str | None = None
        while True:
            data = await self._ok(
                session,
                "GET",
                self._url("users", "me", "calendarList"),
                params={"maxResults": 250, "pageToken": page_token},
                what="calendarList.list",
            )
            for item in data.get("items", []):
                entry = parse(item, CalendarListEntry)
                if not entry.deleted:
                    out.append(calendar_from_wire(entry, dict(item)))
            page_token = data.get("nextPageToken")
            if not page_token:
                return out

    async def list_events(
        self,
        session: Session,
        calendar_id: str,
        window: TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """Expanded events overlapping ``window`` (timeMin bounds the end, timeMax the start).

        Google expands series (``singleEvents=true``); cancelled occurrences are left out.
        """
        async for page in self._event_pages(
            session,
            calendar_id,
            ["events"],
            {
                "singleEvents": True,
                "timeMin": format_datetime(window.start),
                "timeMax": format_datetime(window.end),
                "maxResults": min(MAX_PAGE, page_size or self.page_size),
            },
            what="events.list",
        ):
            yield [
                self._event(item, calendar_id) for item in page if item.get("status") != "cancelled"
            ]

    async def list_instances(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        window: TimeRange | None = None,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """events.instances: the occurrences of one series (cancelled ones left out)."""
        params: dict[str, Any] = {"maxResults": min(MAX_PAGE, page_size or self.page_size)}
        if window is not None:
            params["timeMin"] = format_datetime(window.start)
            params["timeMax"] = format_datetime(window.end)
        async for page in self._event_pages(
            session,
            calendar_id,
            ["events", event_id, "instances"],
            params,
            what="events.instances",
        ):
            yield [
                self._event(item, calendar_id) for item in page if item.get("status") != "cancelled"
            ]

    async def _event_pages(
        self,
        session: Session,
        calendar_id: str,
        path: list[str],
        params: dict[str, Any],
        *,
        what: str,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        url = self._url("calendars", calendar_id, *path)

        def fetch(token: str | None, sent: asyncio.Future[None] | None = None) -> Any:
            return self._ok(
                session, "GET", url, params={**params, "pageToken": token}, what=what, sent=sent
            )

        pages = calbridge.prefetched_pages(fetch, _next_token)
        async with contextlib.aclosing(pages):
            async for data in pages:
                yield list(data.get("items", []))

    async def changes(
        self,
        session: Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ChangePage]:
        """events.list by ``syncToken`` (a full read when ``cursor`` is None).

        Every round sends the same parameters (Google requires the incremental query to
        equal the initial one); pages are followed with the same syncToken; the cursor is
        the ``nextSyncToken`` of the last page. A 410 (whatever its reason) raises
        :class:`~calbridge.errors.SyncCursorExpired`. Google forbids ``timeMin``/``timeMax``
        with sync tokens, so ``window`` filters client-side: in an incremental round an
        event that left the window is reported deleted.
        """
        params: dict[str, Any] = {
            "showDeleted": True,
            "singleEvents": self.expand_changes,
            "maxResults": min(MAX_PAGE, page_size or self.page_size),
            "syncToken": cursor,
        }
        full = cursor is None
        url = self._url("calendars", calendar_id, "events")

        def fetch(token: str | None, sent: asyncio.Future[None] | None = None) -> Any:
            return self._ok(
                session,
                "GET",
                url,
                params={**params, "pageToken": token},
                what="events.list (sync)",
                sync=True,
                sent=sent,
            )

        pages = calbridge.prefetched_pages(fetch, _next_token)
        async with contextlib.aclosing(pages):
            async for data in pages:
                next_sync = None if data.get("nextPageToken") else data.get("nextSyncToken")
                if not data.get("nextPageToken") and not next_sync:
                    raise ProviderResponseError(
                        "the last events.list page has no nextSyncToken", provider=self.name
                    )
                changes = tuple(
                    c
                    for item in data.get("items", [])
                    if (c := self._change(item, calendar_id, window, full)) is not None
                )
                yield ChangePage(changes=changes, cursor=next_sync, full=full)

    def _change(
        self, item: dict[str, Any], calendar_id: str, window: TimeRange | None, full: bool
    ) -> Change | None:
        wire = event_struct(item)
        if not wire.id:
            raise ProviderResponseError("a synced event has no id", provider=self.name)
        if is_tombstone(wire):
            return Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=wire.id)
        event = event_from_wire(wire, calendar_id, dict(item), expanded=self.expand_changes)
        if window is not None and not event.recurrence:
            start, end = event.start.as_utc(), event.end.as_utc()
            inside = window.overlaps(start, max(end, start + _EPS))
            if not inside:
                if full:
                    return None
                return Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=wire.id)
        return Change(
            kind=ChangeKind.UPSERTED, calendar_id=calendar_id, event_id=wire.id, event=event
        )

    # -- writes ------------------------------------------------------------------------

    async def create_event(
        self, session: Session, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """events.insert with an id derived from ``idempotency_key``; 409 = already made."""
        event_id = client_event_id(idempotency_key)
        body = event_to_wire(draft, event_id=event_id, default_tz=self.default_tz)
        response = await self.google.call(
            session,
            "POST",
            self._url("calendars", calendar_id, "events"),
            what="events.insert",
            accept={409},
            json=body,
            idempotent=True,
        )
        if response.status_code == 409:
            existing = await self._ok(
                session,
                "GET",
                self._url("calendars", calendar_id, "events", event_id),
                what="events.get after 409",
            )
            return self._event(existing, calendar_id)
        data = calbridge.read_json(response, provider=self.name, what="events.insert")
        return self._event(data, calendar_id)

    async def update_event(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """events.update (full replace) with ``If-Match``; a stale etag raises Conflict."""
        body = event_to_wire(draft, default_tz=self.default_tz)
        data = await self._ok(
            session,
            "PUT",
            self._url("calendars", calendar_id, "events", event_id),
            json=body,
            headers={"If-Match": etag} if etag else None,
            what="events.update",
        )
        return self._event(data, calendar_id)

    async def get_event(self, session: Session, calendar_id: str, event_id: str) -> Event:
        """events.get (a deleted event reads as NotFound)."""
        data = await self._ok(
            session,
            "GET",
            self._url("calendars", calendar_id, "events", event_id),
            what="events.get",
        )
        wire = event_struct(data)
        if is_tombstone(wire):
            raise NotFound(f"event {event_id!r} was deleted", provider=self.name, status=200)
        return event_from_wire(wire, calendar_id, dict(data))

    async def delete_event(self, session: Session, calendar_id: str, event_id: str) -> None:
        """events.delete; 410 ``deleted`` (already gone) is a success."""
        await self.google.call(
            session,
            "DELETE",
            self._url("calendars", calendar_id, "events", event_id),
            what="events.delete",
            accept={410},
        )

    async def free_busy(
        self, session: Session, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """freebusy.query; a calendar Google cannot read raises NotFound."""
        data = await self._ok(
            session,
            "POST",
            self._url("freeBusy"),
            json={
                "timeMin": format_datetime(window.start),
                "timeMax": format_datetime(window.end),
                "items": [{"id": cid} for cid in calendar_ids],
            },
            idempotent=True,
            what="freebusy.query",
        )
        out: list[FreeBusy] = []
        calendars = data.get("calendars", {})
        for cid in calendar_ids:
            entry = calendars.get(cid, {})
            errors = entry.get("errors") or []
            if errors:
                reason = errors[0].get("reason", "error")
                if reason == "notFound":
                    raise NotFound(f"free/busy of {cid!r}: notFound", provider=self.name)
                raise InvalidRequest(f"free/busy of {cid!r}: {reason}", provider=self.name)
            for block in entry.get("busy", []):
                out.append(
                    FreeBusy(
                        calendar_id=cid,
                        start=parse_datetime(block["start"]),
                        end=parse_datetime(block["end"]),
                        status=FreeBusyStatus.BUSY,
                    )
                )
        return out

    # -- push --------------------------------------------------------------------------

    async def subscribe(self, session: Session, request: ChannelRequest) -> Channel:
        """events.watch on one calendar (``primary`` when none is named)."""
        if len(request.calendar_ids) > 1:
            raise InvalidRequest(
                "a Google channel watches one calendar; subscribe once per calendar",
                provider=self.name,
            )
        calendar_id = request.calendar_ids[0] if request.calendar_ids else "primary"
        return await self._watch(
            session,
            calendar_id=calendar_id,
            callback_url=request.callback_url,
            token=request.secret or _push.new_token(),
            ttl=request.ttl_seconds,
            account_id=session.account.id,
            filters=dict(request.filters),
        )

    async def _watch(
        self,
        session: Session,
        *,
        calendar_id: str,
        callback_url: str,
        token: Any,
        ttl: int | None,
        account_id: str | None,
        filters: dict[str, str],
    ) -> Channel:
        body = _push.watch_body(
            channel_id=_push.new_channel_id(),
            address=callback_url,
            token=token,
            ttl_seconds=ttl,
            now=self.clock(),
        )
        data = await self._ok(
            session,
            "POST",
            self._url("calendars", calendar_id, "events", "watch"),
            json=body,
            what="events.watch",
        )
        return _push.channel_from_wire(
            data,
            callback_url=callback_url,
            calendar_id=calendar_id,
            token=token,
            account_id=account_id,
            filters=filters,
        )

    async def renew(self, session: Session, channel: Channel) -> Channel:
        """Open a new overlapping channel (new id and token), then stop the old one."""
        fresh = await self._watch(
            session,
            calendar_id=channel.calendar_ids[0] if channel.calendar_ids else "primary",
            callback_url=channel.callback_url,
            token=_push.new_token(),
            ttl=None,
            account_id=channel.account_id,
            filters=dict(channel.filters),
        )
        await self.unsubscribe(session, channel)
        return fresh

    async def unsubscribe(self, session: Session, channel: Channel) -> None:
        """channels.stop by id and resourceId; an unknown channel counts as stopped."""
        await self.google.call(
            session,
            "POST",
            self._url("channels", "stop"),
            what="channels.stop",
            accept={404},
            json={"id": channel.id, "resourceId": channel.resource_id},
            idempotent=True,
        )

    async def verify_notification(
        self, request: WebhookRequest, channels: ChannelLookup
    ) -> list[Notification]:
        """Check the channel token (constant time), channel id and resource id."""
        return await _push.parse_notification(request, channels)


def _next_token(data: Any) -> str | None:
    token = data.get("nextPageToken")
    return str(token) if token else None
