"""The Outlook provider: Microsoft Graph v1.0 calendars.

Settings (``ProviderSettings``):

* ``client_id`` / ``client_secret``: the app registration.
* ``base_urls``: ``graph`` (default ``https://graph.microsoft.com``; the API is
  ``{graph}/v1.0``) and ``login`` (default ``https://login.microsoftonline.com``; OAuth at
  ``{login}/{tenant}/oauth2/v2.0/...``). The sandbox serves both under one prefix:
  ``{"graph": url, "login": url}`` with ``url = .../graph``.
* ``options``: ``tenant`` (default ``common``), ``page_size`` (calendarView ``$top``,
  default 50), ``delta_page_size`` (``odata.maxpagesize`` of delta pages, default 100),
  ``default_time_zone`` (IANA zone for floating and all-day times, default ``UTC``),
  ``lifecycle_url`` (lifecycleNotificationUrl; default the channel's callback URL),
  ``max_subscription_minutes`` (default 10080), ``sync_window_days`` (delta window when
  the caller gives none: 30 days back, this many ahead; default 365),
  ``revoke_sign_in_sessions`` (revoke by ``POST /me/revokeSignInSessions``, which signs
  the user out of *every* app; default false: revoking only forgets locally).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import attrs
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
    EventStatus,
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
    Transparency,
    WebhookRequest,
)
from calbridge.errors import InvalidRequest, NotFound, ProviderResponseError
from calbridge.toolkit import AuthorizedClient, wire_dict

from . import _push
from ._convert import (
    calendar_from_wire,
    event_from_wire,
    event_to_wire,
    property_expand,
    transaction_id,
)
from ._cursor import Cursor, id_hash
from ._errors import error_for
from ._oauth import AUTHORIZATION_PARAMS, make_oauth
from ._tz import parse_graph_datetime
from ._wire import Subscription

__all__ = ["MAILBOX_CONCURRENCY", "PREFER", "OutlookProvider"]

#: Outlook's concurrent-request limit per mailbox and application (more are refused with
#: 429 ``ApplicationThrottled``)
MAILBOX_CONCURRENCY = 4
#: the preferences every call sends: times in UTC, ids that stay stable when an event
#: moves between folders
PREFER = ('outlook.timezone="UTC"', 'IdType="ImmutableId"')

_FREE_BUSY = {
    "busy": FreeBusyStatus.BUSY,
    "tentative": FreeBusyStatus.TENTATIVE,
    "oof": FreeBusyStatus.UNAVAILABLE,
    "workingElsewhere": FreeBusyStatus.BUSY,
}


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class OutlookProvider(Provider):
    """Outlook / Microsoft 365 calendars through Microsoft Graph v1.0."""

    name = "outlook"
    capabilities = Capabilities(
        push=True,
        incremental_sync=True,
        free_busy=True,
        write=True,
        idempotent_create=True,
        server_side_expansion=True,
        pkce=True,
        rotating_refresh_tokens=True,
        channel_expiry=True,
    )
    default_scopes: ClassVar[tuple[str, ...]] = (
        "User.Read",
        "Calendars.ReadWrite",
        "offline_access",
    )
    #: how calls are retried (tests may lower it)
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy()

    def __init__(self, *, http: httpx.AsyncClient, settings: ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        urls = settings.base_urls
        graph = urls.get("graph", "https://graph.microsoft.com").rstrip("/")
        login = urls.get("login", "https://login.microsoftonline.com").rstrip("/")
        self.api = f"{graph}/v1.0"
        self.clock: Callable[[], float] = time.time
        #: Graph's calls (and the token endpoint's); :func:`calbridge.send` retries 429
        #: (any method) and 503 (repeatable requests), sleeping Graph's ``Retry-After``
        self.graph = AuthorizedClient(
            http=http,
            provider=self.name,
            errors=error_for,
            policy=self.retry_policy,
            headers={"Prefer": ", ".join(PREFER)},
            account_concurrency=int(settings.option("mailbox_concurrency", MAILBOX_CONCURRENCY)),
        )
        self.oauth = make_oauth(
            self.graph,
            settings,
            login=login,
            tenant=str(settings.option("tenant", "common")),
            clock=self._now,
        )
        self.page_size = int(settings.option("page_size", 50))
        self.delta_page_size = int(settings.option("delta_page_size", 100))
        self.default_tz = str(settings.option("default_time_zone", "UTC"))
        self.max_minutes = int(settings.option("max_subscription_minutes", _push.MAX_MINUTES))
        self.window_days = int(settings.option("sync_window_days", 365))

    # -- helpers -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock()

    def _url(self, *parts: str) -> str:
        return "/".join([self.api, *(quote(p, safe="") for p in parts)])

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
        prefer: tuple[str, ...] = (),
        idempotent: bool | None = None,
        sent: asyncio.Future[None] | None = None,
    ) -> Any:
        """The answer's JSON (None for an empty answer); ``prefer`` adds preferences."""
        if prefer:
            headers = {**(headers or {}), "Prefer": ", ".join((*PREFER, *prefer))}
        return await self.graph.call_json(
            session, method, url, what=what, params=params, json=json, headers=headers,
            idempotent=idempotent, sent=sent,
        )  # fmt: skip

    async def _pages(
        self, session: Session, url: str, params: Mapping[str, Any] | None, *, what: str
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages following ``@odata.nextLink``, the next one requested ahead."""

        def fetch(link: str | None, sent: asyncio.Future[None] | None) -> Any:
            # the nextLink carries every parameter: follow it verbatim
            if link is None:
                return self._ok(session, "GET", url, params=params, what=what, sent=sent)
            return self._ok(session, "GET", link, what=what, sent=sent)

        pages = calbridge.prefetched_pages(fetch, _next_link)
        async with contextlib.aclosing(pages):
            async for data in pages:
                yield [item for item in data.get("value", []) if isinstance(item, dict)]

    # -- OAuth -------------------------------------------------------------------------

    def authorization_url(self, request: AuthorizationRequest) -> str:
        """Consent URL (tenant from options) with offline_access, PKCE S256 and state."""
        return self.oauth.authorization_url(
            request, scopes=self.default_scopes, params=AUTHORIZATION_PARAMS
        )

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> TokenGrant:
        """Trade the code; the account is the Graph user id read from ``/me``."""
        answer = await self.oauth.exchange(
            code=code,
            redirect_uri=redirect_uri,
            code_verifier=code_verifier,
            params={"scope": self.oauth.scope((), self.default_scopes)},
        )
        tokens = answer.tokens
        session = Session(
            account=Account(app_user_id="", provider=self.name, provider_account_id=""),
            tokens=StaticTokenSource(tokens),
        )
        me = await self._ok(session, "GET", self._url("me"), what="GET /me")
        if not isinstance(me, dict) or not me.get("id"):
            raise ProviderResponseError("GET /me has no id", provider=self.name)
        email = me.get("mail") or me.get("userPrincipalName")
        return TokenGrant(
            tokens=tokens,
            provider_account_id=str(me["id"]),
            email=str(email) if email else None,
            details={"tenant": str(self.settings.option("tenant", "common"))},
        )

    async def refresh_tokens(self, tokens: TokenSet) -> TokenSet:
        """Refresh; the new (rotated) refresh token replaces the old one."""
        return await self.oauth.refresh(
            tokens, params={"scope": self.oauth.scope(tokens.scope, self.default_scopes)}
        )

    async def revoke_tokens(self, tokens: TokenSet) -> None:
        """Forget locally (no revocation endpoint), or revoke every sign-in session if asked."""
        if not self.settings.option("revoke_sign_in_sessions", False):
            return
        session = Session(
            account=Account(app_user_id="", provider=self.name, provider_account_id=""),
            tokens=StaticTokenSource(tokens),
        )
        await self.graph.call(
            session,
            "POST",
            self._url("me", "revokeSignInSessions"),
            what="revokeSignInSessions",
            accept={401},
            json={},
        )

    # -- reads -------------------------------------------------------------------------

    async def list_calendars(self, session: Session) -> list[Calendar]:
        """``GET /me/calendars``, every page."""
        return [
            calendar_from_wire(item)
            async for page in self._pages(
                session, self._url("me", "calendars"), None, what="list calendars"
            )
            for item in page
        ]

    async def list_events(
        self,
        session: Session,
        calendar_id: str,
        window: TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[Event]]:
        """``calendarView``: singles, occurrences and exceptions overlapping ``window``."""
        params = {
            "startDateTime": _iso(window.start),
            "endDateTime": _iso(window.end),
            "$top": page_size or self.page_size,
            "$expand": property_expand(),
        }
        url = self._url("me", "calendars", calendar_id, "calendarView")
        async for page in self._pages(session, url, params, what="calendarView"):
            yield [event_from_wire(item, calendar_id) for item in page]

    async def get_event(self, session: Session, calendar_id: str, event_id: str) -> Event:
        """``GET /me/events/{id}`` (with calbridge's extended properties)."""
        data = await self._ok(
            session, "GET", self._url("me", "events", event_id),
            params={"$expand": property_expand()}, what="get event",
        )  # fmt: skip
        return event_from_wire(data, calendar_id)

    async def changes(
        self,
        session: Session,
        calendar_id: str,
        cursor: str | None,
        *,
        window: TimeRange | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[ChangePage]:
        """A ``calendarView/delta`` round, links followed verbatim to the deltaLink.

        A full round (``cursor`` None) covers ``window`` (default: 30 days back,
        ``sync_window_days`` ahead); the window is fixed for the cursor's lifetime.
        ``@removed`` items become deletions unless they are out-of-window noise (see
        ``_cursor``); items carrying only changed properties are read in full; duplicates
        within a page collapse. A 410 (``syncStateNotFound`` or a reset with
        ``Location``) raises :class:`~calbridge.errors.SyncCursorExpired`.
        """
        full = cursor is None
        params: dict[str, Any] | None
        if cursor is None:
            if window is None:
                now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
                window = TimeRange(
                    start=now - dt.timedelta(days=30), end=now + dt.timedelta(days=self.window_days)
                )
            state = Cursor(link="", window=window)
            url = self._url("me", "calendars", calendar_id, "calendarView", "delta")
            params = {"startDateTime": _iso(window.start), "endDateTime": _iso(window.end)}
        else:
            state = Cursor.decode(cursor)
            url, params = state.link, None
        prefer = (f"odata.maxpagesize={page_size or self.delta_page_size}",)
        what = "calendarView/delta"

        def fetch(link: str | None, sent: asyncio.Future[None] | None) -> Any:
            if link is None:
                return self._ok(
                    session, "GET", url, params=params, prefer=prefer, what=what, sent=sent
                )
            return self._ok(session, "GET", link, prefer=prefer, what=what, sent=sent)

        pages = calbridge.prefetched_pages(fetch, _next_link)
        async with contextlib.aclosing(pages):
            async for data in pages:
                found: dict[str, Change] = {}
                for item in data.get("value", []):
                    change = await self._delta_item(session, calendar_id, item, state, full)
                    if change is not None:
                        found.pop(change.event_id, None)
                        found[change.event_id] = change
                if data.get("@odata.nextLink"):
                    yield ChangePage(changes=tuple(found.values()), full=full)
                    continue
                delta_link = data.get("@odata.deltaLink")
                if not delta_link:
                    raise ProviderResponseError(
                        "a delta page has neither @odata.nextLink nor @odata.deltaLink",
                        provider=self.name,
                    )
                state.link = str(delta_link)
                yield ChangePage(changes=tuple(found.values()), cursor=state.encode(), full=full)

    async def _delta_item(
        self, session: Session, calendar_id: str, item: Any, state: Cursor, full: bool
    ) -> Change | None:
        if not isinstance(item, dict) or not item.get("id"):
            raise ProviderResponseError("a delta item has no id", provider=self.name)
        event_id = str(item["id"])
        key = id_hash(event_id)
        if "@removed" in item:
            if full or key not in state.known:
                return None  # out-of-window noise, or something never reported
            state.known.discard(key)
            return Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=event_id)
        if "start" not in item or "end" not in item:  # only the changed properties came
            try:
                event = await self.get_event(session, calendar_id, event_id)
            except NotFound:
                event = None
        else:
            event = event_from_wire(item, calendar_id)
        if event is None or not state.window.overlaps(event.start.as_utc(), event.end.as_utc()):
            if key in state.known:
                state.known.discard(key)
                return Change(kind=ChangeKind.DELETED, calendar_id=calendar_id, event_id=event_id)
            return None
        state.known.add(key)
        return Change(
            kind=ChangeKind.UPSERTED, calendar_id=calendar_id, event_id=event_id, event=event
        )

    # -- writes ------------------------------------------------------------------------

    async def create_event(
        self, session: Session, calendar_id: str, draft: EventDraft, *, idempotency_key: str
    ) -> Event:
        """POST with a ``transactionId`` derived from the key (Graph de-duplicates it)."""
        body = event_to_wire(
            draft, default_tz=self.default_tz, transaction=transaction_id(idempotency_key)
        )
        data = await self._ok(
            session, "POST", self._url("me", "calendars", calendar_id, "events"),
            json=body, idempotent=True, what="create event",
        )  # fmt: skip
        event = event_from_wire(data, calendar_id)
        if draft.properties and not event.properties:
            event = attrs.evolve(event, properties=draft.properties)
        return event

    async def update_event(
        self,
        session: Session,
        calendar_id: str,
        event_id: str,
        draft: EventDraft,
        *,
        etag: str | None = None,
    ) -> Event:
        """PATCH every writable field, with ``If-Match`` (412 raises Conflict)."""
        body = event_to_wire(draft, default_tz=self.default_tz)
        headers = {"If-Match": f'W/"{etag}"'} if etag else None
        data = await self._ok(
            session, "PATCH", self._url("me", "events", event_id),
            json=body, headers=headers, what="update event",
        )  # fmt: skip
        event = event_from_wire(data, calendar_id)
        if draft.properties and not event.properties:
            event = attrs.evolve(event, properties=draft.properties)
        return event

    async def delete_event(self, session: Session, calendar_id: str, event_id: str) -> None:
        """DELETE; 404 (already gone) is a success."""
        await self.graph.call(
            session,
            "DELETE",
            self._url("me", "events", event_id),
            what="delete event",
            accept={404, 410},
        )

    async def free_busy(
        self, session: Session, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """``getSchedule`` for the default calendar; calendarView for the others."""
        calendars = {c.id: c for c in await self.list_calendars(session)}
        out: list[FreeBusy] = []
        for cid in calendar_ids:
            cal = calendars.get(cid)
            if cal is None:
                raise NotFound(f"calendar {cid!r} not found", provider=self.name, status=404)
            owner = (cal.raw.get("owner") or {}).get("address")
            if cal.primary and owner:
                out.extend(await self._schedule(session, cid, str(owner), window))
                continue
            async for page in self.list_events(session, cid, window):
                for ev in page:
                    if (
                        ev.transparency is Transparency.OPAQUE
                        and ev.status is not EventStatus.CANCELLED
                    ):
                        status = (
                            FreeBusyStatus.TENTATIVE
                            if ev.status is EventStatus.TENTATIVE
                            else FreeBusyStatus.BUSY
                        )
                        out.append(
                            FreeBusy(
                                calendar_id=cid,
                                start=ev.start.as_utc(),
                                end=ev.end.as_utc(),
                                status=status,
                            )
                        )
        return out

    async def _schedule(
        self, session: Session, calendar_id: str, address: str, window: TimeRange
    ) -> list[FreeBusy]:
        data = await self._ok(
            session, "POST", self._url("me", "calendar", "getSchedule"),
            json={
                "schedules": [address],
                "startTime": {"dateTime": _iso(window.start)[:-1], "timeZone": "UTC"},
                "endTime": {"dateTime": _iso(window.end)[:-1], "timeZone": "UTC"},
                "availabilityViewInterval": 30,
            },
            idempotent=True, what="getSchedule",
        )  # fmt: skip
        out: list[FreeBusy] = []
        for schedule in data.get("value", []):
            if schedule.get("error"):
                raise InvalidRequest(
                    f"getSchedule: {schedule['error'].get('message', 'error')}", provider=self.name
                )
            for item in schedule.get("scheduleItems", []):
                status = _FREE_BUSY.get(str(item.get("status")))
                if status is None:
                    continue
                start = parse_graph_datetime(item["start"]["dateTime"], item["start"]["timeZone"])
                end = parse_graph_datetime(item["end"]["dateTime"], item["end"]["timeZone"])
                out.append(
                    FreeBusy(
                        calendar_id=calendar_id,
                        start=start.astimezone(dt.UTC),
                        end=end.astimezone(dt.UTC),
                        status=status,
                    )
                )
        return out

    # -- push --------------------------------------------------------------------------

    async def subscribe(self, session: Session, request: ChannelRequest) -> Channel:
        """POST /subscriptions on one calendar's events, with clientState and lifecycle URL."""
        if len(request.calendar_ids) > 1:
            raise InvalidRequest(
                "a Graph subscription watches one calendar; subscribe once per calendar",
                provider=self.name,
            )
        resource = (
            f"/me/calendars/{request.calendar_ids[0]}/events"
            if request.calendar_ids
            else "/me/events"
        )
        secret = request.secret or _push.new_client_state()
        subscription = Subscription(
            change_type="created,updated,deleted",
            notification_url=request.callback_url,
            lifecycle_notification_url=str(
                self.settings.option("lifecycle_url") or request.callback_url
            ),
            resource=resource,
            expiration_date_time=_push.expiration(
                self.clock(), request.ttl_seconds, self.max_minutes
            ),
            client_state=secret,
            latest_supported_tls_version="v1_2",
        )
        # Graph echoes clientState on every notification: the secret goes in deliberately
        body = wire_dict(subscription, reveal_secrets=True)
        data = await self._ok(
            session, "POST", self._url("subscriptions"), json=body, what="create subscription"
        )
        return _push.channel_from_wire(
            data,
            callback_url=request.callback_url,
            calendar_ids=request.calendar_ids,
            secret=secret,
            account_id=session.account.id,
            filters=dict(request.filters),
        )

    async def renew(self, session: Session, channel: Channel) -> Channel:
        """PATCH the subscription's expirationDateTime (also reauthorizes it)."""
        expires = _push.expiration(self.clock(), None, self.max_minutes)
        data = await self._ok(
            session, "PATCH", self._url("subscriptions", channel.id),
            json=wire_dict(Subscription(expiration_date_time=expires)),
            what="renew subscription",
        )  # fmt: skip
        when = data.get("expirationDateTime") if isinstance(data, dict) else None
        stamp = parse_graph_datetime(str(when or expires), "UTC")
        return attrs.evolve(channel, expires_at=int(stamp.timestamp()))

    async def unsubscribe(self, session: Session, channel: Channel) -> None:
        """DELETE the subscription; an unknown one counts as deleted."""
        await self.graph.call(
            session,
            "DELETE",
            self._url("subscriptions", channel.id),
            what="delete subscription",
            accept={404},
        )

    async def verify_notification(
        self, request: WebhookRequest, channels: ChannelLookup
    ) -> list[Notification]:
        """Validation handshake, or clientState checked per item (constant time)."""
        return await _push.parse_notification(request, channels)


def _next_link(data: Any) -> str | None:
    link = data.get("@odata.nextLink")
    return str(link) if link else None
