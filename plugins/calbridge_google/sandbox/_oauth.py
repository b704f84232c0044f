"""The sandbox's Google OAuth endpoints: ``/o/oauth2/v2/auth``, ``/token``, ``/revoke``.

The authorize endpoint consents on the user's behalf: ``login_hint`` names the user, who
is created natively on Google (with a primary calendar) when the world does not know
them yet, and the browser is redirected (302) to ``redirect_uri`` with ``code`` and
``state``. Codes, PKCE (``S256`` and ``plain``, a challenge without a method is
``plain``), grants and tokens are the :class:`calbridge.sandbox.GrantServer`'s.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from calbridge.sandbox import Consent, GrantRefused, UnknownUser

from ._state import GoogleState

__all__ = ["oauth_routes"]


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _id_token(state: GoogleState, email: str, client_id: str) -> str:
    user = state.world.user(email)
    now = int(state.now())
    claims = {
        "iss": "https://accounts.google.com",
        "azp": client_id,
        "aud": client_id,
        "sub": user.id,
        "email": user.email,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }

    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    # unsigned in the sandbox: the signature segment is a placeholder
    return f"{part({'alg': 'RS256', 'kid': 'sandbox', 'typ': 'JWT'})}.{part(claims)}.sandbox"


def _refusal(refused: GrantRefused) -> JSONResponse:
    """A refused code or refresh grant, as Google words it."""
    if refused.reason == "redirect_mismatch":
        return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
    if refused.reason == "invalid_verifier":
        return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
    if refused.reason == "invalid_refresh_token":
        return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
    return _oauth_error(400, "invalid_grant", "Malformed auth code.")


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the token endpoint's format)."""
    raw = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(raw, keep_blank_values=True))


def oauth_routes(state: GoogleState) -> list[Route]:
    """The OAuth routes of the Google sandbox."""
    world = state.world

    async def authorize(request: Request) -> Response:
        q = request.query_params
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if world.application_secret(client_id) is None:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if not redirect_uri:
            return _oauth_error(400, "invalid_request", "Missing required parameter: redirect_uri")
        if q.get("response_type") != "code":
            return _oauth_error(400, "unsupported_response_type", "response_type must be code")
        email = (q.get("login_hint") or "").strip().lower()
        if not email:
            return _oauth_error(
                400,
                "invalid_request",
                "The sandbox consents automatically and needs login_hint=<email>.",
            )
        try:
            user = world.user(email)
        except UnknownUser:
            user = world.add_user(email, native="google")
        state_param = q.get("state")
        if user.native != "google":
            params = {"error": "access_denied"}
            if state_param is not None:
                params["state"] = state_param
            return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)
        try:
            challenge = state.oauth.pkce.challenge(
                q.get("code_challenge"), q.get("code_challenge_method")
            )
        except GrantRefused:
            return _oauth_error(400, "invalid_request", "Invalid code_challenge_method.")
        scope = q.get("scope", "")
        code = state.oauth.issue_code(
            Consent(
                client_id=client_id,
                subject=user.email,
                scope=scope,
                offline=q.get("access_type") == "offline",
            ),
            redirect_uri,
            challenge,
            lifetime=state.settings.code_lifetime,
        )
        params = {"code": code, "scope": scope}
        if state_param is not None:
            params["state"] = state_param
        sep = "&" if "?" in redirect_uri else "?"
        return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", status_code=302)

    async def token(request: Request) -> Response:
        f = await _form(request)
        client_id = f.get("client_id", "")
        if not world.check_application(client_id, f.get("client_secret", "")):
            return _oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = f.get("grant_type")
        if grant_type == "authorization_code":
            try:
                grant = state.oauth.exchange_code(
                    client_id, f.get("code", ""), f.get("redirect_uri"), f.get("code_verifier")
                )
            except GrantRefused as refused:
                return _refusal(refused)
            access, life = state.mint_access(grant)
            body: dict[str, object] = {
                "access_token": access,
                "expires_in": life,
                "scope": grant.scope,
                "token_type": "Bearer",
            }
            if grant.refresh_token:
                body["refresh_token"] = grant.refresh_token
            if "openid" in grant.scope.split():
                body["id_token"] = _id_token(state, grant.subject, client_id)
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        if grant_type == "refresh_token":
            try:
                found = state.oauth.refresh(client_id, f.get("refresh_token", ""))
            except GrantRefused as refused:
                return _refusal(refused)
            access, life = state.mint_access(found)
            return JSONResponse(
                {
                    "access_token": access,
                    "expires_in": life,
                    "scope": found.scope,
                    "token_type": "Bearer",
                },
                headers={"Cache-Control": "no-store"},
            )
        return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type.")

    async def revoke(request: Request) -> Response:
        form = await _form(request)
        value = form.get("token") or request.query_params.get("token") or ""
        if not value or state.oauth.revoke(value) is None:
            return _oauth_error(400, "invalid_token", "Token expired or revoked")
        return JSONResponse({})

    async def issue(request: Request) -> Response:
        """Sandbox shortcut: tokens for a user without the browser dance."""
        body = await request.json()
        scope = str(body.get("scope") or "https://www.googleapis.com/auth/calendar")
        try:
            tokens = state.issue(str(body["email"]), str(body.get("client_id", "sandbox")), scope)
        except (KeyError, ValueError) as exc:
            return _oauth_error(400, "invalid_request", str(exc))
        return JSONResponse(tokens)

    return [
        Route("/o/oauth2/v2/auth", authorize, methods=["GET"]),
        Route("/token", token, methods=["POST"]),
        Route("/revoke", revoke, methods=["POST"]),
        Route("/_sandbox/tokens", issue, methods=["POST"]),
    ]
