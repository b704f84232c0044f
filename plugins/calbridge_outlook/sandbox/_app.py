"""The Graph sandbox's HTTP surface: identity platform v2 OAuth and ``/v1.0``.

Mounted at ``/graph`` by ``calbridge sandbox serve``:

* ``/graph/{tenant}/oauth2/v2.0/authorize`` auto-consents for ``login_hint`` (creating
  the user natively at Microsoft, with a primary calendar) and redirects back with
  ``code`` and ``state``; ``/token`` exchanges codes (PKCE checked) and rotates refresh
  tokens (each is single-use).
* ``/graph/v1.0/me/...`` (also ``/users/{id|upn}/...`` for the caller's own mailbox):
  calendars, calendarView (+ delta), events CRUD, instances, getSchedule, subscriptions.
  Every request counts against its mailbox's 4 concurrent requests (429
  ``ApplicationThrottled`` with a fractional ``Retry-After`` beyond) and takes the faults
  armed for ``graph`` in the world.
* ``/graph/_control/...``: evict delta tokens, send lifecycle notifications.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from calbridge.sandbox import RequestCounts, User, World, counting, request_counts

from ._api import dispatch
from ._core import PROVIDER, GraphError, GraphView, error_body, view_for
from ._state import AccessToken, AuthCode, RefreshToken, new_token
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


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


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
        past = self.view.now() - dt.timedelta(seconds=1)
        with self.view.lock:
            for token in self.view.access.values():
                if token.email == email.lower():
                    token.expires = past

    def _revoke_tokens(self, email: str) -> None:
        key = email.lower()
        with self.view.lock:
            for store in (self.view.access, self.view.refresh):
                for tok in [t for t, v in store.items() if v.email == key]:
                    store.pop(tok)
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
        user = self.world.add_user(email, native="microsoft")
        if user.native != "microsoft":
            return back(error="access_denied", error_description="not a Microsoft account")
        code = new_token(24)
        with self.view.lock:
            self.view.codes[code] = AuthCode(
                email=user.email,
                client_id=client_id,
                redirect_uri=redirect_uri,
                scopes=tuple(q.get("scope", "").split()),
                challenge=q.get("code_challenge"),
                challenge_method=q.get("code_challenge_method"),
                expires=self.view.now() + dt.timedelta(minutes=10),
            )
        return back(code=code, session_state=secrets.token_hex(8))

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        client_id = form.get("client_id", "")
        secret = self.world.application_secret(client_id)
        given = form.get("client_secret", "")
        if secret is None or not hmac.compare_digest(given.encode(), secret.reveal().encode()):
            return _oauth_error(401, "invalid_client", "Invalid client secret provided.", 7000215)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            with self.view.lock:
                code = self.view.codes.pop(form.get("code", ""), None)
            if code is None or code.client_id != client_id or code.expires < self.view.now():
                return _oauth_error(
                    400, "invalid_grant", "The code has expired or was used.", 70008
                )
            if code.redirect_uri != form.get("redirect_uri"):
                return _oauth_error(400, "invalid_grant", "redirect_uri does not match.", 50148)
            if code.challenge:
                verifier = form.get("code_verifier", "")
                if not verifier or not hmac.compare_digest(_s256(verifier), code.challenge):
                    return _oauth_error(400, "invalid_grant", "PKCE verification failed.", 501481)
            return self._issue(code.email, client_id, code.scopes)
        if grant == "refresh_token":
            with self.view.lock:
                old = self.view.refresh.pop(form.get("refresh_token", ""), None)
            if old is None or old.client_id != client_id:
                return _oauth_error(
                    400, "invalid_grant", "The refresh token has expired or was revoked.", 70008
                )
            return self._issue(old.email, client_id, old.scopes)
        return _oauth_error(400, "unsupported_grant_type", "Unsupported grant_type.", 70003)

    def _issue(self, email: str, client_id: str, scopes: tuple[str, ...]) -> Response:
        ttl = self.view.settings.access_token_ttl
        access = new_token()
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(s for s in scopes if s != "offline_access") or "User.Read",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": access,
        }
        with self.view.lock:
            self.view.access[access] = AccessToken(
                email=email,
                client_id=client_id,
                scopes=scopes,
                expires=self.view.now() + dt.timedelta(seconds=ttl),
            )
            if "offline_access" in scopes:
                refresh = new_token(48)
                self.view.refresh[refresh] = RefreshToken(
                    email=email, client_id=client_id, scopes=scopes
                )
                body["refresh_token"] = refresh
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    # -- API -----------------------------------------------------------------------------

    def _caller(self, request: Request) -> tuple[User, str]:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        with self.view.lock:
            grant = self.view.access.get(token)
        if grant is None:
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.")
        if grant.expires <= self.view.now():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return self.world.user(grant.email), grant.client_id

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
        self.counts.limited += 1  # Graph counts every authenticated request
        with view.lock:
            busy = view.inflight.get(user.email, 0)
            if busy >= view.settings.mailbox_concurrency:
                over = True
            else:
                over = False
                view.inflight[user.email] = busy + 1
        now = view.now()
        if over:
            self.counts.throttled += 1
            body = error_body(
                "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", now
            )
            return JSONResponse(
                body,
                status_code=429,
                headers={"Retry-After": f"{view.settings.throttle_retry_after:g}"},
            )
        try:
            latency = self.world.faults.latency(PROVIDER)
            if latency:
                await asyncio.sleep(latency)
            root = request.scope.get("root_path", "")
            path = request.url.path
            rel = path[len(root) :] if root and path.startswith(root) else path
            injected = self.world.faults.take_error(PROVIDER, rel)
            if injected is not None:
                headers = {}
                if injected.retry_after is not None:
                    headers["Retry-After"] = f"{injected.retry_after:g}"
                code = _RETRY_CODES.get(injected.status, "generalException")
                return GraphError(injected.status, code, "Injected fault.", headers).response(now)
            try:
                return await handler()
            except GraphError as exc:
                return exc.response(view.now())
        finally:
            with view.lock:
                view.inflight[user.email] -= 1

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
