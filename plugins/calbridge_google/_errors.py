"""Google's error envelope mapped onto calbridge's error tree, and what is worth retrying.

Google signals throttling as 403 with a ``usageLimits`` reason (``rateLimitExceeded``,
``userRateLimitExceeded``, ``quotaExceeded``) as well as 429; other 403s are permanent.
A 410 is decided by status alone (some arrive without the ``fullSyncRequired`` reason).

:func:`calbridge.send` already retries connection errors, timeouts, 429, 502, 503 and
504; :func:`should_retry` adds, with the same full-jitter backoff, a 403 with a
``usageLimits`` reason (Google refused before doing anything: any method may be repeated)
and a 500 (``backendError``) for requests that may be repeated.
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

from ._wire import ErrorItem, error_items

__all__ = [
    "RATE_LIMIT_REASONS",
    "TOKEN_ERRORS",
    "error_for",
    "is_rate_limited",
    "reasons",
    "should_retry",
    "sync_error_for",
]

PROVIDER = "google"

#: the token endpoint's refusals (``invalid_grant``: the grant is gone, connect again)
TOKEN_ERRORS = TokenErrors(provider=PROVIDER, issuer="Google")

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def reasons(response: httpx.Response) -> list[ErrorItem]:
    """The ``error.errors`` items of a response (empty when there are none)."""
    return error_items(_body(response))


def is_rate_limited(response: httpx.Response) -> bool:
    """429, or 403 with a usageLimits rate/quota reason."""
    if response.status_code == 429:
        return True
    if response.status_code != 403:
        return False
    return any(item.reason in RATE_LIMIT_REASONS for item in reasons(response))


def should_retry(response: httpx.Response, *, idempotent: bool) -> bool:
    """A 403 rate/quota refusal (any method), or a 500 of a request that may be repeated."""
    status = response.status_code
    return (status == 403 and is_rate_limited(response)) or (status == 500 and idempotent)


def _message(response: httpx.Response) -> str:
    body = _body(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str) and message:
            return message
    return response.reason_phrase or "error"


def error_for(response: httpx.Response, *, what: str, sync: bool = False) -> ProviderError:
    """The calbridge error for a failed Google response (messages carry no secrets).

    A 410 is :class:`SyncCursorExpired` for sync reads (``sync=True``), whatever its
    reason, and :class:`NotFound` (deleted) elsewhere.
    """
    status = response.status_code
    items = reasons(response)
    reason = ",".join(i.reason for i in items if i.reason) or "none"
    text = f"{what}: {_message(response)} (reason {reason})"
    if status == 400:
        fields: dict[str, list[str]] = {}
        for item in items:
            if item.location:
                fields.setdefault(item.location, []).append(item.message or item.reason or "")
        return InvalidRequest(text, provider=PROVIDER, field_errors=fields)
    if status == 401:
        return ReauthRequired(text, provider=PROVIDER, status=401)
    if is_rate_limited(response):
        return RateLimited(
            text,
            provider=PROVIDER,
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status == 403:
        if any(i.reason in _SCOPE_REASONS for i in items):
            return ReauthRequired(text, provider=PROVIDER, status=403)
        return ProviderError(text, provider=PROVIDER, status=403)
    if status == 404:
        return NotFound(text, provider=PROVIDER, status=404)
    if status in (409, 412):
        return Conflict(text, provider=PROVIDER, status=status)
    if status == 410:
        if sync:
            return SyncCursorExpired(text, provider=PROVIDER, status=410)
        return NotFound(text, provider=PROVIDER, status=410)
    if status >= 500:
        return Unavailable(
            text,
            provider=PROVIDER,
            status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    return ProviderResponseError(text, provider=PROVIDER, status=status)


def sync_error_for(response: httpx.Response, *, what: str) -> ProviderError:
    """:func:`error_for` of a sync read: a 410 is an expired sync token."""
    return error_for(response, what=what, sync=True)
