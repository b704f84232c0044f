"""The Graph sandbox's HTTP surface: identity platform v2 OAuth and ``/v1.0``.

Mounted at ``/graph`` by ``calbridge sandbox serve``:

* ``/graph/{tenant}/oauth2/v2.0/authorize`` auto-consents for ``login_hint`` (creating
  the user natively at Microsoft, with a primary calendar) and redirects back with
  ``code`` and ``state``; ``/token`` exchanges codes (PKCE ``S256`` or ``plain``, a
  challenge without a method being ``plain``) and rotates refresh tokens (each is
  single-use), on a :class:`calbridge.sandbox.GrantServer`.
* ``/graph/v1.0/me/...`` (also ``/users/{id|upn}/...`` for the caller's own mailbox):
  calendars, calendarView (+ delta), events CRUD, instances, getSchedule, subscriptions.
  Every request counts against its mailbox's 4 concurrent requests (429
  ``ApplicationThrottled`` with a fractional ``Retry-After`` beyond) and takes the faults
  armed for ``graph`` in the world.
* ``/graph/_control/...``: evict delta tokens, send lifecycle notifications.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from calbridge.sandbox import (
    Consent,
    GrantRefused,
    RequestCounts,
    Throttle,
    User,
    World,
    counting,
    mount_path,
    request_counts,
    retry_after_headers,
)

from ._api import dispatch
from ._core import PROVIDER, GraphError, GraphView, error_body, view_for
from ._subs import send_lifecycle

__all__ = ["GraphSandbox"]

_RETRY_CODES = {429: "TooManyRequests", 503: "serviceNotAvailable", 410: "syncStateNotFound"}


def _oauth_error(status: int, error: str, description: str, code: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": secrets.token_hex(16),
            "correlation_id": secrets.token_hex(16),
        },
        status_code=status,
    )


def _refusal(refused: GrantRefused) -> JSONResponse:
    """A refused code or refresh grant, in the identity platform's words."""
    if refused.reason == "redirect_mismatch":
        return _oauth_error(400, "invalid_grant", "redirect_uri does not match.", 50148)
    if refused.reason == "invalid_verifier":
        return _oauth_error(400, "invalid_grant", "PKCE verification failed.", 501481)
    if refused.reason == "invalid_refresh_token":
        return _oauth_error(
            400, "invalid_grant", "The refresh token has expired or was revoked.", 70008
        )
    return _oauth_error(400, "invalid_grant", "The code has expired or was used.", 70008)


class GraphSandbox:
    """The Graph sandbox over one world."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.view: GraphView = view_for(world)
        from ._subs import on_native_change

        world.subscribe(lambda change: on_native_change(self.view, change))
        world.faults.on(PROVIDER, "expire_tokens", self._expire_tokens)
        world.faults.on(PROVIDER, "revoke_tokens", self._revoke_tokens)
        #: what this sandbox answered (``GET /_sandbox/requests``)
        self.counts: RequestCounts = request_counts(world, PROVIDER)
        #: mailbox concurrency (and rates, when set)
        self.throttle = Throttle(self.counts, enabled=lambda: world.rate_limits)
        self.app = counting(
            Starlette(
                routes=[
                    Route(
                        "/v1.0/{path:path}", self._api, methods=["GET", "POST", "PATCH", "DELETE"]
                    ),
                    Route("/_control/delta/evict", self._evict, methods=["POST"]),
                    Route(
                        "/_control/subscriptions/{sid}/lifecycle", self._lifecycle, methods=["POST"]
                    ),
                    Route("/{tenant}/oauth2/v2.0/authorize", self._authorize, methods=["GET"]),
                    Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                ]
            ),
            self.counts,
        )

    # -- faults --------------------------------------------------------------------------

    def _expire_tokens(self, email: str) -> None:
        self.view.oauth.expire_access(email.lower())

    def _revoke_tokens(self, email: str) -> None:
        key = email.lower()
        self.view.oauth.revoke_subject(key)
        with self.view.lock:
            subs = [s for s in self.view.subscriptions.values() if s.email == key]
        for sub in subs:
            send_lifecycle(self.view, sub, "subscriptionRemoved")

    # -- OAuth ---------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if self.world.application_secret(client_id) is None:
            return _oauth_error(400, "unauthorized_client", "Application not found.", 700016)
        if not redirect_uri or q.get("response_type") != "code":
            return _oauth_error(
                400, "invalid_request", "redirect_uri and code are required", 900144
            )
        email = (q.get("login_hint") or "").strip().lower()

        def back(**params: str) -> Response:
            state = q.get("state")
            if state is not None:
                params["state"] = state
            sep = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", status_code=302)

        if "@" not in email:
            return back(error="login_required", error_description="login_hint is required")
        try:
            challenge = self.view.oauth.pkce.challenge(
                q.get("code_challenge"), q.get("code_challenge_method")
            )
        except GrantRefused:
            return back(
                error="invalid_request",
                error_description="AADSTS9002313: code_challenge_method must be S256 or plain",
            )
        user = self.world.add_user(email, native="microsoft")
        if user.native != "microsoft":
            return back(error="access_denied", error_description="not a Microsoft account")
        scope = " ".join(q.get("scope", "").split())
        code = self.view.oauth.issue_code(
            Consent(
                client_id=client_id,
                subject=user.email,
                scope=scope,
                offline="offline_access" in scope.split(),
            ),
            redirect_uri,
            challenge,
        )
        return back(code=code, session_state=secrets.token_hex(8))

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        client_id = form.get("client_id", "")
        if not self.world.check_application(client_id, form.get("client_secret", "")):
            return _oauth_error(401, "invalid_client", "Invalid client secret provided.", 7000215)
        kind = form.get("grant_type")
        oauth = self.view.oauth
        try:
            if kind == "authorization_code":
                grant = oauth.exchange_code(
                    client_id,
                    form.get("code", ""),
                    form.get("redirect_uri"),
                    form.get("code_verifier"),
                )
            elif kind == "refresh_token":
                grant = oauth.refresh(client_id, form.get("refresh_token", ""))
            else:
                return _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type.", 70003)
        except GrantRefused as refused:
            return _refusal(refused)
        ttl = self.view.settings.access_token_ttl
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(s for s in grant.scope.split() if s != "offline_access")
            or "User.Read",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": oauth.mint_access(grant, ttl),
        }
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    # -- API -----------------------------------------------------------------------------

    def _caller(self, request: Request) -> tuple[User, str]:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        info = self.view.oauth.introspect(token)
        if info is None:
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.")
        if not info.active:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return self.world.user(info.grant.subject), info.grant.client_id

    async def _api(self, request: Request) -> Response:
        try:
            user, client_id = self._caller(request)
        except GraphError as exc:
            return exc.response(self.view.now())
        return await self._throttled(
            user, request, lambda: dispatch(self.view, request, user, client_id)
        )

    async def _throttled(
        self, user: User, request: Request, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        view = self.view
        settings = view.settings
        # Graph counts every authenticated request; a mailbox takes 4 at once
        with self.throttle.admit(
            user.email,
            rates=settings.mailbox_rate_limits,
            concurrency=settings.mailbox_concurrency,
        ) as refused:
            if refused is not None:
                if refused.limit is None:
                    code, message = (
                        "ApplicationThrottled",
                        "Application is over its MailboxConcurrency limit.",
                    )
                    wait = settings.throttle_retry_after
                else:
                    code, message = "TooManyRequests", "Please retry again later."
                    wait = refused.retry_after or settings.throttle_retry_after
                return JSONResponse(
                    error_body(code, message, view.now()),
                    status_code=429,
                    headers=retry_after_headers(wait),
                )
            injected = await self.world.faults.intercept(PROVIDER, mount_path(request.scope))
            if injected is not None:
                headers = retry_after_headers(injected.retry_after)
                code = _RETRY_CODES.get(injected.status, "generalException")
                return GraphError(injected.status, code, "Injected fault.", headers).response(
                    view.now()
                )
            try:
                return await handler()
            except GraphError as exc:
                return exc.response(view.now())

    # -- control -------------------------------------------------------------------------

    async def _evict(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        email = str(body.get("email", "")).lower()
        with self.view.lock:
            for token in [t for t, s in self.view.deltas.items() if not email or s.email == email]:
                self.view.evicted[token] = self.view.deltas.pop(token)
            self.view.rounds.clear()
        return Response(status_code=204)

    async def _lifecycle(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw.strip() else {}
        sub = self.view.subscriptions.get(request.path_params["sid"])
        if sub is None:
            return JSONResponse({"error": "unknown subscription"}, status_code=404)
        try:
            send_lifecycle(self.view, sub, str(body.get("event", "")))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)
