"""The OAuth callback as an ASGI app (RFC 9700 §4.2.4, §2.1: no referrer, no open redirect).

Mount it at the prefix of ``redirect_base``; provider ``p``'s callback is ``GET /p``::

    app = oauth_callback_app(bridge.complete_connect, success_path="/settings/calendars")
    # Starlette(routes=[Mount("/calbridge/oauth", app=app)])

Every answer (404, 405 and redirects included) carries ``Referrer-Policy: no-referrer``,
``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``
and a CSP with ``frame-ancestors 'none'``; no redirect is built from the ``Host`` header
(the trailing-slash redirect is off; success goes to the relative ``success_path``).
Success redirects (303) to the fixed, same-origin ``success_path``; a ``next=`` parameter
is never read. Failures answer 400 with a generic page (the reason goes to the log, never
to the browser), and a refused state never reaches the token endpoint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from calbridge._asgi import SecureApp
from calbridge.errors import CalbridgeError, OAuthError
from calbridge.models import Account

from ._flow import CALLBACK_HEADERS

__all__ = ["oauth_callback_app"]

log = logging.getLogger("calbridge.auth")

Complete = Callable[[str, Mapping[str, str]], Awaitable[Account]]
_PROVIDER_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_FAILED: Final = (
    "<!doctype html><title>Connection failed</title>"
    "<p>The calendar connection could not be completed. Please start again.</p>"
)


def _safe_path(path: str) -> str:
    if not path.startswith("/") or path.startswith("//") or "\\" in path or ":" in path:
        raise ValueError("success_path must be a same-origin absolute path such as '/done'")
    return path


def oauth_callback_app(complete: Complete, *, success_path: str = "/") -> Starlette:
    """An ASGI app answering ``GET /{provider}`` OAuth callbacks through ``complete``.

    Args:
        complete: ``(provider, query params) -> Account``, e.g. ``OAuthFlow.complete`` or
            ``Bridge.complete_connect``.
        success_path: where the browser goes after success (same origin only).
    """
    target = _safe_path(success_path)

    async def callback(request: Request) -> Response:
        provider = request.path_params["provider"]
        headers = dict(CALLBACK_HEADERS)
        if not _PROVIDER_RE.match(provider):
            return HTMLResponse(_FAILED, status_code=404, headers=headers)
        params = {k: v for k, v in request.query_params.items() if k != "next"}
        try:
            await complete(provider, params)
        except OAuthError as exc:
            log.warning("OAuth callback for %s refused: %s", provider, exc)
            return HTMLResponse(_FAILED, status_code=400, headers=headers)
        except CalbridgeError as exc:
            log.warning("OAuth callback for %s failed: %s", provider, type(exc).__name__)
            return HTMLResponse(_FAILED, status_code=502, headers=headers)
        return RedirectResponse(target, status_code=303, headers=headers)

    return SecureApp(routes=[Route("/{provider}", callback, methods=["GET"])])
