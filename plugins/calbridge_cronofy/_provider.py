"""The Cronofy provider.

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
  - ``cursor_margin_seconds``: how far before a read's start its cursor points (default 120).
  - ``clock``: a callable returning Cronofy's current time as an aware datetime (the
    sandbox's clock in tests); defaults to the system clock.
  - ``rate_limit_per_second`` / ``rate_limit_per_minute``: the client-side limiter
    (Cronofy's documented 50 and 500 per application; 0 turns one off), or
    ``rate_limiters``: the :class:`calbridge.RateLimiter` instances to use instead (share
    them between providers of one application).
  - ``retry``: a :class:`calbridge.RetryPolicy`.
  - ``prefetch``: fetch the next page while the current one is consumed (default True).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import httpx

import calbridge
from calbridge.errors import (
    ConfigurationError,
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderResponseError,
    SyncCursorExpired,
)

from . import _convert as convert
from . import _push
from ._errors import raise_for_response
from ._hosts import Hosts, hosts_for
from ._wire import (
    ChannelWire,
    CronofyCalendar,
    Profile,
    TokenResponse,
    UserInfo,
    parse,
)

__all__ = ["DEFAULT_SCOPES", "CronofyProvider", "ServiceAccountAuthorization"]

PROVIDER = "cronofy"

#: scopes asked for when the caller names none
DEFAULT_SCOPES = (
    "read_account",
    "list_calendars",
    "read_events",
    "create_event",
    "delete_event",
    "read_free_busy",
    "create_calendar",
    "change_participation_status",
)
ENTERPRISE_SCOPES = ("service_account/accounts/manage",)
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


def _bool(value: bool) -> str:
    return "true" if value else "false"


class ServiceAccountAuthorization(dict[str, str]):
    """One Enterprise Connect account authorization request (``email``, ``callback_url``,
    ``scope``, ``state``), as sent to ``/v1/service_account_authorizations``."""

    @classmethod
    def build(
        cls, *, email: str, callback_url: str, scopes: Sequence[str], state: str = ""
    ) -> ServiceAccountAuthorization:
        """An authorization request for one user of the service account's domain."""
        out = cls(email=email, callback_url=callback_url, scope=" ".join(scopes))
        if state:
            out["state"] = state
        return out


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
        self._policy: calbridge.RetryPolicy = settings.option("retry") or calbridge.RetryPolicy()
        self._default_tzid = str(settings.option("default_tzid", "Etc/UTC"))
        self._localized = bool(settings.option("localized_times", True))
        self._margin = float(settings.option("cursor_margin_seconds", 120))
        self._clock: Callable[[], dt.datetime] | None = settings.option("clock")
        self._prefetch = bool(settings.option("prefetch", True))
        given: Sequence[calbridge.RateLimiter] | None = settings.option("rate_limiters")
        self._limiters: list[calbridge.RateLimiter] = (
            list(given)
            if given is not None
            else [
                calbridge.RateLimiter(limit=int(limit), period=period)
                for limit, period in (
                    (settings.option("rate_limit_per_second", 50), 1.0),
                    (settings.option("rate_limit_per_minute", 500), 60.0),
                )
                if limit
            ]
        )

    # -- plumbing ---------------------------------------------------------------------

    def _secret(self) -> calbridge.Secret:
        if not self.settings.client_secret:
            raise ConfigurationError("the cronofy provider needs settings.client_secret")
        return self.settings.client_secret

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

    async def _send(self, request: httpx.Request, *, idempotent: bool | None) -> httpx.Response:
        for limiter in self._limiters:
            await limiter.acquire()
        return await calbridge.send(
            self.http, request, provider=self.name, policy=self._policy, idempotent=idempotent
        )

    async def _call(
        self,
        session: calbridge.Session,
        method: str,
        url: str,
        *,
        params: Any = None,
        body: Any = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """One authorized call: a 401 refreshes the token once and retries."""
        tokens = await session.access_token()
        for attempt in (1, 2):
            request = self.http.build_request(
                method,
                url,
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {tokens.access_token.reveal()}"},
            )
            response = await self._send(request, idempotent=idempotent)
            if response.status_code == 401 and attempt == 1:
                tokens = await session.refresh(tokens)
                continue
            if response.status_code >= 400:
                raise_for_response(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            raise ProviderResponseError(
                f"{response.request.method} {calbridge.redact_url(response.request.url)} "
                "answered with something that is not JSON",
                provider=PROVIDER,
                status=response.status_code,
            ) from None

    async def _pages(
        self, session: calbridge.Session, url: str, params: Any
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Decoded pages, following absolute ``pages.next_page`` URLs with no parameters.

        With ``prefetch`` the next page is requested before the current one is handed out,
        so Cronofy works while the caller converts; at most two pages are held.
        """
        data = self._json(await self._call(session, "GET", url, params=params))
        while True:
            pages = data.get("pages") if isinstance(data, Mapping) else None
            next_url = pages.get("next_page") if isinstance(pages, Mapping) else None
            pending: asyncio.Task[httpx.Response] | None = None
            if next_url and self._prefetch:
                pending = asyncio.ensure_future(self._call(session, "GET", next_url))
            try:
                yield data
            except BaseException:
                if pending is not None:
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
                raise
            if not next_url:
                return
            if pending is not None:
                data = self._json(await pending)
            else:
                data = self._json(await self._call(session, "GET", next_url))

    async def _token_call(self, url: str, body: Mapping[str, Any]) -> httpx.Response:
        request = self.http.build_request("POST", url, json=dict(body))
        response = await self._send(request, idempotent=False)
        if response.status_code >= 400:
            raise_for_response(response)
        return response

    # -- OAuth: Individual Connect ------------------------------------------------------

    def authorization_url(self, request: calbridge.AuthorizationRequest) -> str:
        """``https://app[-dc].cronofy.com/oauth/authorize?...`` (note: the app host).

        ``request.extra`` may carry ``avoid_linking``, ``provider_name``, ``link_token``,
        ``locale`` and ``delegated_scope``; they are passed on as given.
        """
        query: dict[str, str] = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": request.redirect_uri,
            "scope": " ".join(request.scopes or self.default_scopes),
            "state": request.state,
        }
        if request.login_hint:
            query["login_hint"] = request.login_hint
        query.update(request.extra)
        return f"{self.hosts.app}/oauth/authorize?{urllib.parse.urlencode(query)}"

    async def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None = None
    ) -> calbridge.TokenGrant:
        """Trade a code for tokens; ``sub``, ``account_id`` and ``linking_profile`` are kept."""
        response = await self._token_call(
            f"{self.hosts.api}/oauth/token",
            {
                "client_id": self.settings.client_id,
                "client_secret": self._secret().reveal(),
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
            },
        )
        raw = self._json(response)
        answer = parse(raw, TokenResponse)
        tokens = convert.token_set(answer)
        account = answer.sub or answer.account_id or answer.service_account_id
        if not account:
            raise ProviderResponseError(
                "the token answer names no account (sub)", provider=PROVIDER
            )
        details: dict[str, Any] = {
            k: raw[k]
            for k in ("sub", "account_id", "linking_profile", "service_account_id", "scope")
            if k in raw
        }
        profile = answer.linking_profile
        email = profile.profile_name if profile and "@" in (profile.profile_name or "") else None
        return calbridge.TokenGrant(
            tokens=tokens, provider_account_id=account, email=email, details=details
        )

    async def refresh_tokens(self, tokens: calbridge.TokenSet) -> calbridge.TokenSet:
        """Refresh; Cronofy may return the same refresh token (the old one is kept if none)."""
        if tokens.refresh_token is None:
            raise calbridge.errors.ReauthRequired(
                "no refresh token is held for this account", provider=PROVIDER
            )
        response = await self._token_call(
            f"{self.hosts.api}/oauth/token",
            {
                "client_id": self.settings.client_id,
                "client_secret": self._secret().reveal(),
                "grant_type": "refresh_token",
                "refresh_token": tokens.refresh_token.reveal(),
            },
        )
        return convert.token_set(parse(self._json(response), TokenResponse), previous=tokens)

    async def revoke_tokens(self, tokens: calbridge.TokenSet) -> None:
        """Revoke the authorization, with the refresh token (the access token may be expired)."""
        token = tokens.refresh_token or tokens.access_token
        await self._token_call(
            f"{self.hosts.api}/oauth/token/revoke",
            {
                "client_id": self.settings.client_id,
                "client_secret": self._secret().reveal(),
                "token": token.reveal(),
            },
        )

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
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": request.redirect_uri,
            "scope": " ".join(request.scopes or ENTERPRISE_SCOPES),
            "delegated_scope": " ".join(delegated_scope),
            "state": request.state,
            **request.extra,
        }
        return (
            f"{self.hosts.app}/enterprise_connect/oauth/authorize?{urllib.parse.urlencode(query)}"
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
        await self._call(
            session, "POST", f"{self.hosts.api}/v1/service_account_authorizations", body=body
        )

    async def exchange_service_account_code(
        self, *, code: str, callback_url: str
    ) -> calbridge.TokenGrant:
        """Trade the code Cronofy sent to ``callback_url`` (which is the redirect_uri)."""
        return await self.exchange_code(code=code, redirect_uri=callback_url)

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
        google_event_ids: bool = False,
    ) -> AsyncIterator[list[Mapping[str, Any]]]:
        """Cronofy's Read Events with every parameter, page by page as decoded JSON.

        The lower-level door behind :meth:`list_events` and :meth:`changes`.
        """
        flags: dict[str, bool | str] = {
            "include_managed": include_managed,
            "include_deleted": include_deleted,
            "include_moved": include_moved,
            "localized_times": self._localized,
        }
        if only_managed:
            flags["only_managed"] = True
        if google_event_ids:
            flags["google_event_ids"] = True
        if last_modified is not None:
            flags["last_modified"] = (
                convert.format_instant(last_modified)
                if isinstance(last_modified, dt.datetime)
                else last_modified
            )
        params = self._read_params(calendar_ids, window, **flags)
        async for data in self._pages(session, f"{self.hosts.api}/v1/events", params):
            events = data.get("events")
            if not isinstance(events, list):
                raise ProviderResponseError("an events page without events", provider=PROVIDER)
            yield events

    async def list_events(
        self,
        session: calbridge.Session,
        calendar_id: str,
        window: calbridge.TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[calbridge.Event]]:
        """Events overlapping ``window``, one Cronofy page at a time (Cronofy sizes pages)."""
        event = convert.event_from_json
        async for page in self.read_events(session, calendar_ids=(calendar_id,), window=window):
            yield tuple([event(e) for e in page if not e.get("deleted")])

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
        pages = self.read_events(
            session,
            calendar_ids=(calendar_id,),
            window=window,
            last_modified=since,
            include_deleted=not full,
            include_moved=not full,
        )
        event = convert.event_from_json
        buffered: calbridge.ChangePage | None = None
        async for page in pages:
            if buffered is not None:
                yield buffered
            changes = []
            for raw in page:
                if raw.get("deleted"):
                    if full:
                        continue
                    changes.append(
                        calbridge.Change(
                            kind=calbridge.ChangeKind.DELETED,
                            calendar_id=raw.get("calendar_id") or calendar_id,
                            event_id=raw.get("event_id") or raw["event_uid"],
                        )
                    )
                else:
                    ev = event(raw)
                    changes.append(
                        calbridge.Change(
                            kind=calbridge.ChangeKind.UPSERTED,
                            calendar_id=ev.calendar_id,
                            event_id=ev.id,
                            event=ev,
                        )
                    )
            buffered = calbridge.ChangePage(changes=tuple(changes), full=full)
        last = buffered or calbridge.ChangePage(changes=(), full=full)
        yield calbridge.ChangePage(changes=last.changes, cursor=next_cursor, full=full)

    async def free_busy(
        self,
        session: calbridge.Session,
        calendar_ids: Sequence[str],
        window: calbridge.TimeRange,
    ) -> list[calbridge.FreeBusy]:
        """Busy, tentative and unknown blocks (free blocks are left out), app events included."""
        params = self._read_params(calendar_ids, window, include_managed=True)
        out: list[calbridge.FreeBusy] = []
        async for data in self._pages(session, f"{self.hosts.api}/v1/free_busy", params):
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


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")
