"""The Cronofy provider's foundation: settings, HTTP plumbing, OAuth.

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
    a read long enough to split (default 4).
  - ``shard_min_wait``: how many seconds this process must sit idle waiting for each of a
    read's second and third pages, after converting the page before (wall time less its
    own CPU time), before the read is split (default 0.001). The next page is on the wire
    while the current one converts, so a provider that answers within that time is hidden
    already; splitting pays when it is slower than that, across a network, and not when
    it runs on this process's CPU (an in-process sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any, ClassVar, TypeVar

import httpx

import calbridge
from calbridge.errors import (
    ConfigurationError,
    ProviderResponseError,
)

from . import _convert as convert
from . import _push
from ._errors import raise_for_response
from ._hosts import Hosts, hosts_for
from ._push import AuthorizationCallback
from ._wire import (
    TokenResponse,
    UserInfo,
    parse,
)

__all__ = ["DEFAULT_SCOPES", "CronofyBase", "ServiceAccountAuthorization", "seg"]

PROVIDER = "cronofy"
P = TypeVar("P")

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


class CronofyBase(calbridge.Provider):
    """Settings, HTTP plumbing and OAuth (Individual and Enterprise Connect).

    :class:`~calbridge_cronofy.CronofyProvider` adds the calendar API on top.
    """

    name = PROVIDER
    default_scopes: ClassVar[tuple[str, ...]] = DEFAULT_SCOPES

    def __init__(self, *, http: httpx.AsyncClient, settings: calbridge.ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        dc = settings.option("data_center", settings.option("data_centre"))
        self.hosts: Hosts = hosts_for(dc, settings.base_urls)
        api = httpx.URL(self.hosts.api)
        self._api_origin = (api.scheme, api.host, api.port)
        #: "scheme://host[:port]/": a next_page starting so is on the API host for sure
        self._api_prefix = f"{api.scheme}://{api.netloc.decode('ascii')}/"
        self._policy: calbridge.RetryPolicy = settings.option("retry") or calbridge.RetryPolicy()
        self._default_tzid = str(settings.option("default_tzid", "Etc/UTC"))
        self._localized = bool(settings.option("localized_times", True))
        self._google_ids = bool(settings.option("google_event_ids", True))
        self._margin = float(settings.option("cursor_margin_seconds", 120))
        self._clock: Callable[[], dt.datetime] | None = settings.option("clock")
        self._prefetch = bool(settings.option("prefetch", True))
        self._read_concurrency = max(1, int(settings.option("read_concurrency", 4)))
        self._shard_min_pages = max(2, int(settings.option("shard_min_pages", 4)))
        self._shard_min_wait = float(settings.option("shard_min_wait", 0.001))
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
        sent: asyncio.Future[None] | None = None,
    ) -> httpx.Response:
        """One authorized call: a 401 refreshes the token once and retries.

        ``sent`` is resolved once the request has been written to the connection (through
        the transport's ``trace`` extension): the paging code waits for it before it hands out
        the page it already has.
        """
        tokens = await session.access_token()
        extensions = {"trace": calbridge.signal_when_sent(sent)} if sent is not None else None
        for attempt in (1, 2):
            request = self.http.build_request(
                method,
                url,
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {tokens.access_token.reveal()}"},
                extensions=extensions,
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
                return decode(await self._call(session, "GET", url, params=params))
            return decode(await self._call(session, "GET", link, sent=sent))

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
        response = await self._call(session, "GET", f"{self.hosts.api}/v1/userinfo")
        return parse(self._json(response), UserInfo).initial_sync_required

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
            **({"login_hint": request.login_hint} if request.login_hint else {}),
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


def seg(value: str) -> str:
    """``value`` as one URL path segment."""
    return urllib.parse.quote(value, safe="")
