"""Graph's error envelope mapped onto calbridge's error tree.

Envelope: ``{"error": {"code", "message", "innerError": {...}}}``. A 410 (whatever its
code: ``syncStateNotFound``, ``SyncStateNotFound``, ``resyncRequired``, or a bare reset
with a ``Location`` header) is an expired sync cursor.
"""

from __future__ import annotations

from typing import Any

import httpx

from calbridge import parse_retry_after
from calbridge.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderResponseError,
    RateLimited,
    ReauthRequired,
    SyncCursorExpired,
    Unavailable,
)
from calbridge.toolkit import TokenErrors

__all__ = ["TOKEN_ERRORS", "error_code", "error_for"]

PROVIDER = "outlook"

#: the identity platform's refusals: the client's credentials, or a grant that is gone
TOKEN_ERRORS = TokenErrors(
    provider=PROVIDER,
    issuer="Microsoft",
    client_codes=frozenset({"invalid_client", "unauthorized_client"}),
    reauth_codes=frozenset({"invalid_grant", "interaction_required", "consent_required"}),
)
_REAUTH_CODES = frozenset(
    {"InvalidAuthenticationToken", "unauthenticated", "AuthenticationError", "invalid_grant"}
)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_code(response: httpx.Response) -> str:
    """``error.code`` of a Graph error response (``""`` when absent)."""
    body = _body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code") or "")
    return ""


def _message(response: httpx.Response) -> str:
    body = _body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str) and message:
            return message
    return response.reason_phrase or "error"


def error_for(response: httpx.Response, *, what: str) -> ProviderError:
    """The calbridge error for a failed Graph response (messages carry no secrets)."""
    status = response.status_code
    code = error_code(response) or "none"
    text = f"{what}: {_message(response)} (code {code})"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status == 400:
        return InvalidRequest(text, provider=PROVIDER)
    if status == 401:
        return ReauthRequired(text, provider=PROVIDER, status=401)
    if status == 403:
        if code in _REAUTH_CODES or code == "ErrorAccessDenied":
            return ReauthRequired(text, provider=PROVIDER, status=403)
        return ProviderError(text, provider=PROVIDER, status=403)
    if status == 404:
        return NotFound(text, provider=PROVIDER, status=404)
    if status in (409, 412):
        return Conflict(text, provider=PROVIDER, status=status)
    if status == 410:
        return SyncCursorExpired(text, provider=PROVIDER, status=410)
    if status == 429:
        return RateLimited(text, provider=PROVIDER, status=429, retry_after=retry_after)
    if status >= 500:
        return Unavailable(text, provider=PROVIDER, status=status, retry_after=retry_after)
    return ProviderResponseError(text, provider=PROVIDER, status=status)
