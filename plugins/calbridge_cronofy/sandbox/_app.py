"""The Cronofy sandbox's HTTP surface (api host and app host on one Starlette app)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from calbridge import Secret
from calbridge.sandbox import (
    Grant,
    GrantRefused,
    RequestCounts,
    Throttle,
    World,
    mount_path,
    request_counts,
    retry_after_headers,
)

from ._engine import PROVIDER, CronofyEngine, engine_for
from ._query import PageStore, Query, encoded_renderer, run_query
from ._state import Channel, PendingWrite, granted_scopes, is_service_account, new_id
from ._wire import FieldError, calendar_json, profile_json
from ._writes import accept_event_write

__all__ = ["CronofySandbox"]

Handler = Callable[[Request], Awaitable[Response]]
AuthedHandler = Callable[[Request, Grant], Awaitable[Response]]

_EVENTS_URL = re.compile(
    r"^(?:https?://[^/]+)?(?:/[^/]+)*?/v1/calendars/(?P<calendar_id>[^/]+)/events$"
)
_JSON = "application/json"  # pages are encoded by PageStore, as JSONResponse would
_MICROSOFT = {"office365", "exchange", "live_connect", "microsoft", "outlook", "outlook_com"}


def _empty(status: int) -> Response:
    return Response(status_code=status)


def _unprocessable(exc: FieldError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=422)


async def _body(request: Request) -> dict[str, Any]:
    """A JSON or form body as a dict (``{}`` when empty)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode()))
    try:
        data = json.loads(raw)
    except ValueError:
        raise FieldError("base", "errors.invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise FieldError("base", "errors.invalid_json", "the body must be a JSON object")
    return data


class CronofySandbox:
    """Cronofy's API over a sandbox world. :attr:`app` is the ASGI app."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.engine: CronofyEngine = engine_for(world)
        settings = self.engine.settings
        self.pages = PageStore(settings.page_size, settings.page_ttl, world.clock.timestamp)
        #: what this sandbox answered (``GET /_sandbox/requests``)
        self.counts: RequestCounts = request_counts(world, PROVIDER)
        #: 50 requests a second and 500 a minute per application (``settings.rate_limits``)
        self.throttle = Throttle(self.counts, enabled=lambda: world.rate_limits)
        self.app = Starlette(routes=self._routes())

    # -- plumbing ----------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Injected latency and errors, then the handler (field errors become 422)."""

        async def wrapped(request: Request) -> Response:
            response = await answer(request)
            self.counts.answered(response.status_code)
            return response

        async def answer(request: Request) -> Response:
            injected = await self.world.faults.intercept(PROVIDER, mount_path(request.scope))
            if injected is not None:
                return Response(
                    status_code=injected.status, headers=retry_after_headers(injected.retry_after)
                )
            try:
                return await handler(request)
            except FieldError as exc:
                return _unprocessable(exc)

        return wrapped

    @staticmethod
    def _prefix(request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def _authed(
        self, handler: AuthedHandler, scope: str | None = None, *, service: bool | None = False
    ) -> Handler:
        """Bearer authentication, rate limiting and the scope check.

        ``service``: False = account tokens only, True = service-account tokens only,
        None = both.
        """

        async def wrapped(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            grant = self.engine.authenticate(token) if token else None
            if grant is None:
                return Response(
                    status_code=401, headers={"WWW-Authenticate": 'Bearer realm="cronofy"'}
                )
            rates = self.engine.settings.rate_limits
            with self.throttle.admit(grant.client_id, rates=rates) as refused:
                if refused is not None:
                    return _empty(429)  # Cronofy sends no Retry-After
                if scope is not None and scope not in granted_scopes(grant):
                    return _empty(403)
                if service is not None and is_service_account(grant) != service:
                    return _empty(403)
                return await handler(request, grant)

        return self._guard(wrapped)

    def _base(self, request: Request) -> str:
        """The absolute base URL the client used (scheme, host and mount prefix)."""
        return f"{request.url.scheme}://{request.url.netloc}{self._prefix(request)}"

    def _client(self, body: dict[str, Any]) -> str | None:
        client_id = str(body.get("client_id", ""))
        given = Secret(str(body.get("client_secret", "")))
        return client_id if self.world.check_application(client_id, given) else None

    # -- OAuth (app host and api host) ---------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if self.world.application_secret(client_id) is None or not redirect_uri:
            return PlainTextResponse("unknown client_id or missing redirect_uri", 400)
        sep = "&" if "?" in redirect_uri else "?"
        state = {"state": q["state"]} if "state" in q else {}
        if q.get("response_type") != "code":
            query = urlencode({"error": "unsupported_response_type", **state})
            return RedirectResponse(f"{redirect_uri}{sep}{query}", 302)
        email = q.get("login_hint") or f"user-{new_id('', 4)}@sandbox.example"
        provider = (q.get("provider_name") or "").lower()
        native: Literal["google", "microsoft"] | None = None
        if provider:
            native = "microsoft" if provider in _MICROSOFT else "google"
        try:
            challenge = self.engine.oauth.pkce.challenge(
                q.get("code_challenge"), q.get("code_challenge_method")
            )
        except GrantRefused:
            query = urlencode({"error": "invalid_request", **state})
            return RedirectResponse(f"{redirect_uri}{sep}{query}", 302)
        account = self.engine.account_for(email, native)
        if not account.profile_connected:
            self.engine.reconnect_profile(account.email)
        code = self.engine.issue_code(
            client_id, redirect_uri, account.sub, q.get("scope", ""), challenge=challenge
        )
        query = urlencode({"code": code, **state})
        return RedirectResponse(f"{redirect_uri}{sep}{query}", 302)

    async def token(self, request: Request) -> Response:
        body = await _body(request)
        client_id = self._client(body)
        if client_id is None:
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        grant_type = body.get("grant_type")
        oauth = self.engine.oauth
        try:
            if grant_type == "authorization_code":
                verifier = body.get("code_verifier")
                grant = oauth.exchange_code(
                    client_id,
                    str(body.get("code", "")),
                    str(body.get("redirect_uri") or "") or None,
                    None if verifier is None else str(verifier),
                )
            elif grant_type == "refresh_token":
                grant = oauth.refresh(client_id, str(body.get("refresh_token", "")))
            else:
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        except GrantRefused:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        out: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": self.engine.mint_access(grant),
            "expires_in": self.engine.token_ttl(grant),
            "refresh_token": grant.refresh_token,
            "scope": grant.scope,
        }
        if is_service_account(grant):
            out["service_account_id"] = grant.subject
        elif grant_type == "authorization_code":
            account = self.engine.accounts[grant.subject]
            out.update(
                account_id=account.sub,
                sub=account.sub,
                linking_profile={
                    "provider_name": account.provider_name,
                    "profile_id": account.profile_id,
                    "profile_name": account.email,
                },
            )
        return JSONResponse(out, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def revoke(self, request: Request) -> Response:
        body = await _body(request)
        client_id = self._client(body)
        if client_id is None:
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        token = body.get("token")
        self.engine.revoke(client_id, token=str(token) if token else None, sub=body.get("sub"))
        return _empty(200)

    # -- identity ----------------------------------------------------------------------

    async def userinfo(self, request: Request, grant: Grant) -> Response:
        if is_service_account(grant):
            return JSONResponse(self.engine.enterprise.userinfo(grant))
        account = self.engine.accounts[grant.subject]
        profile = profile_json(account, self._relink(request))
        profile["profile_calendars"] = self._calendars(account)
        return JSONResponse(
            {
                "sub": account.sub,
                "email": account.email,
                "name": account.name,
                "zoneinfo": account.time_zone,
                "cronofy.type": "account",
                "cronofy.data": {
                    "authorization": {"scope": grant.scope, "status": "active"},
                    "profiles": [profile],
                },
            }
        )

    def _relink(self, request: Request) -> str:
        return f"{self._base(request)}/oauth/authorize?relink=true"

    async def account(self, request: Request, grant: Grant) -> Response:
        account = self.engine.accounts[grant.subject]
        return JSONResponse(
            {
                "account": {
                    "account_id": account.sub,
                    "email": account.email,
                    "name": account.name,
                    "scope": grant.scope,
                    "default_tzid": account.time_zone,
                }
            }
        )

    async def profiles(self, request: Request, grant: Grant) -> Response:
        account = self.engine.accounts[grant.subject]
        return JSONResponse({"profiles": [profile_json(account, self._relink(request))]})

    async def revoke_profile(self, request: Request, grant: Grant) -> Response:
        account = self.engine.accounts[grant.subject]
        if request.path_params["profile_id"] != account.profile_id:
            return _empty(404)
        self.engine.disconnect_profile(account.email)
        return _empty(202)

    # -- calendars ---------------------------------------------------------------------

    def _calendars(self, account: Any) -> list[dict[str, Any]]:
        return [
            calendar_json(cal, self.world.calendar(cal.native_id), account)
            for cal in self.engine.account_calendars(account)
        ]

    async def calendars(self, request: Request, grant: Grant) -> Response:
        account = self.engine.accounts[grant.subject]
        if request.method == "GET":
            return JSONResponse({"sub": account.sub, "calendars": self._calendars(account)})
        if "create_calendar" not in granted_scopes(grant):
            return _empty(403)
        body = await _body(request)
        if body.get("profile_id") != account.profile_id:
            raise FieldError("profile_id", "errors.not_found", "unknown profile_id")
        name = str(body.get("name") or "")
        if not name:
            raise FieldError("name", "errors.required", "required")
        user = self.world.user(account.email)
        taken = {c.name for c in self.world.calendars(account.email)}
        if user.native == "microsoft" and name in taken:
            raise FieldError("name", "errors.duplicate_calendar_name", "already exists")
        native = self.world.add_calendar(account.email, name)
        self.engine.account_calendars(account)
        cal = self.engine.by_native[native.id]
        return JSONResponse({"calendar": calendar_json(cal, native, account)})

    def _own_calendar(self, grant: Grant, calendar_id: str) -> Any:
        cal = self.engine.calendars.get(calendar_id)
        return cal if cal is not None and cal.sub == grant.subject else None

    # -- events ------------------------------------------------------------------------

    async def read_events(self, request: Request, grant: Grant) -> Response:
        return self._read(request, grant, free_busy=False)

    async def free_busy(self, request: Request, grant: Grant) -> Response:
        return self._read(request, grant, free_busy=True)

    def _read(self, request: Request, grant: Grant, *, free_busy: bool) -> Response:
        q = Query.parse(request.query_params)
        rows = run_query(self.engine, grant, q, free_busy=free_busy)
        render = encoded_renderer(self.engine, grant, q, free_busy=free_busy)
        key = "free_busy" if free_busy else "events"
        body = self.pages.first_page(rows, render, key, self._base(request))
        return Response(body, media_type=_JSON)

    async def next_page(self, request: Request, grant: Grant) -> Response:
        key = "free_busy" if "/free_busy/" in request.url.path else "events"
        page = self.pages.page(request.path_params["token"], self._base(request), key)
        return _empty(404) if page is None else Response(page, media_type=_JSON)

    async def upsert_event(self, request: Request, grant: Grant) -> Response:
        body = await _body(request)
        status = accept_event_write(
            self.engine, grant, request.path_params["calendar_id"], request.method, body
        )
        return _empty(status)

    async def batch(self, request: Request, grant: Grant) -> Response:
        """``POST /v1/batch``: event upserts and deletes, answered 207 entry by entry."""
        body = await _body(request)
        entries = body.get("batch")
        if not isinstance(entries, list) or not entries:
            raise FieldError("batch", "errors.required", "required")
        out: list[dict[str, Any]] = []
        for entry in entries:
            match = _EVENTS_URL.match(str(entry.get("relative_url", "")))
            method = str(entry.get("method", "")).upper()
            if match is None or method not in ("POST", "DELETE"):
                out.append({"status": 404})
                continue
            try:
                status = accept_event_write(
                    self.engine, grant, match["calendar_id"], method, dict(entry.get("data") or {})
                )
            except FieldError as exc:
                out.append({"status": 422, "data": exc.body()})
                continue
            out.append({"status": status})
        return JSONResponse({"batch": out}, status_code=207)

    async def bulk_delete(self, request: Request, grant: Grant) -> Response:
        if "delete_event" not in granted_scopes(grant):
            return _empty(403)
        body = await _body(request)
        q = request.query_params
        ids = body.get("calendar_ids") or q.getlist("calendar_ids[]") or q.getlist("calendar_ids")
        delete_all = str(body.get("delete_all", q.get("delete_all", ""))).lower() == "true"
        if bool(ids) == delete_all:
            raise FieldError(
                "base", "errors.invalid", "pass exactly one of delete_all, calendar_ids"
            )
        for (client_id, calendar_id, event_id), _link in list(self.engine.links.items()):
            cal = self._own_calendar(grant, calendar_id)
            if client_id != grant.client_id or cal is None or (ids and calendar_id not in ids):
                continue
            self.engine.accept(
                PendingWrite(
                    client_id=client_id,
                    sub=grant.subject,
                    calendar_id=calendar_id,
                    op="delete",
                    event_id=event_id,
                )
            )
        return _empty(202)

    async def participation(self, request: Request, grant: Grant) -> Response:
        cal = self._own_calendar(grant, request.path_params["calendar_id"])
        if cal is None:
            return _empty(404)
        body = await _body(request)
        status = body.get("status")
        if status not in ("accepted", "tentative", "declined"):
            raise FieldError("status", "errors.invalid", "accepted, tentative or declined")
        uid = request.path_params["event_uid"]
        if self.engine.find_by_uid(grant.subject, cal.calendar_id, uid) is None:
            return _empty(404)
        self.engine.accept(
            PendingWrite(
                client_id=grant.client_id,
                sub=grant.subject,
                calendar_id=cal.calendar_id,
                op="upsert",
                event_uid=uid,
                body={"status": status},
            )
        )
        return _empty(202)

    # -- channels ----------------------------------------------------------------------

    async def channels(self, request: Request, grant: Grant) -> Response:
        open_channels = self.engine.open_channels(grant.client_id, grant.subject)
        if request.method == "GET":
            return JSONResponse({"channels": [c.json() for c in open_channels]})
        body = await _body(request)
        url = body.get("callback_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise FieldError("callback_url", "errors.required", "required")
        calendar_ids, only_managed = self._channel_filters(grant, body.get("filters"))
        channel = Channel(
            channel_id=new_id("chn_"),
            client_id=grant.client_id,
            sub=grant.subject,
            callback_url=url,
            calendar_ids=calendar_ids,
            only_managed=only_managed,
        )
        for existing in open_channels:
            if existing.json()["callback_url"] == url and (
                existing.filters_json() == channel.filters_json()
            ):
                return JSONResponse({"channel": existing.json()})
        if len(open_channels) >= self.engine.settings.max_channels:
            raise FieldError("base", "errors.channel_limit_reached", "too many channels")
        self.engine.channels[channel.channel_id] = channel
        self.engine.send(channel, "verification")
        return JSONResponse({"channel": channel.json()})

    def _channel_filters(self, grant: Grant, filters: Any) -> tuple[tuple[str, ...], bool]:
        """``filters`` of a channel create: ``calendar_ids`` (if given, a non-empty list of
        the account's calendars) and ``only_managed`` (a boolean); 422 otherwise."""
        if filters is None:
            return (), False
        if not isinstance(filters, dict):
            raise FieldError("filters", "errors.invalid", "filters must be an object")
        ids: tuple[str, ...] = ()
        if "calendar_ids" in filters:
            given = filters["calendar_ids"]
            if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
                raise FieldError("filters", "errors.invalid", "calendar_ids must be a list of ids")
            if not given:
                raise FieldError("filters", "errors.invalid", "calendar_ids needs an id")
            for cid in given:
                if self._own_calendar(grant, cid) is None:
                    raise FieldError("filters", "errors.not_found", f"unknown calendar {cid}")
            ids = tuple(dict.fromkeys(given))
        only_managed = filters.get("only_managed", False)
        if isinstance(only_managed, str) and only_managed.lower() in ("true", "false"):
            only_managed = only_managed.lower() == "true"
        if not isinstance(only_managed, bool):
            raise FieldError("filters", "errors.invalid", "only_managed must be true or false")
        return ids, only_managed

    async def close_channel(self, request: Request, grant: Grant) -> Response:
        channel = self.engine.channels.get(request.path_params["channel_id"])
        if (
            channel is None
            or channel.closed
            or channel.sub != grant.subject
            or channel.client_id != grant.client_id
        ):
            return _empty(404)
        channel.closed = True
        return _empty(202)

    async def service_account_authorizations(self, request: Request, grant: Grant) -> Response:
        self.engine.enterprise.request_access(grant, await _body(request))
        return _empty(202)

    # -- routes ------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        a = self._authed
        return [
            Route("/oauth/authorize", self._guard(self.authorize), methods=["GET"]),
            Route("/oauth/token", self._guard(self.token), methods=["POST"]),
            Route("/oauth/token/revoke", self._guard(self.revoke), methods=["POST"]),
            Route(
                "/enterprise_connect/oauth/authorize",
                self._guard(self.engine.enterprise.authorize),
                methods=["GET"],
            ),
            Route(
                "/v1/service_account_authorizations",
                a(self.service_account_authorizations, service=True),
                methods=["POST"],
            ),
            Route("/v1/userinfo", a(self.userinfo, service=None), methods=["GET"]),
            Route("/v1/account", a(self.account), methods=["GET"]),
            Route("/v1/profiles", a(self.profiles), methods=["GET"]),
            Route("/v1/profiles/{profile_id}/revoke", a(self.revoke_profile), methods=["POST"]),
            Route("/v1/calendars", a(self.calendars), methods=["GET", "POST"]),
            Route(
                "/v1/calendars/{calendar_id}/events",
                a(self.upsert_event),
                methods=["POST", "DELETE"],
            ),
            Route(
                "/v1/calendars/{calendar_id}/events/{event_uid}/participation_status",
                a(self.participation),
                methods=["POST"],
            ),
            Route("/v1/batch", a(self.batch), methods=["POST"]),
            Route("/v1/events", a(self.read_events, "read_events"), methods=["GET"]),
            Route("/v1/events", a(self.bulk_delete), methods=["DELETE"]),
            Route("/v1/events/pages/{token}", a(self.next_page), methods=["GET"]),
            Route("/v1/free_busy", a(self.free_busy, "read_free_busy"), methods=["GET"]),
            Route("/v1/free_busy/pages/{token}", a(self.next_page), methods=["GET"]),
            Route("/v1/channels", a(self.channels), methods=["GET", "POST"]),
            Route("/v1/channels/{channel_id}", a(self.close_channel), methods=["DELETE"]),
        ]
