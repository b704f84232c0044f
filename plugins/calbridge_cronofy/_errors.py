"""Cronofy's error answers as calbridge errors.

==========================  ===================================================================
Cronofy answer              calbridge error
==========================  ===================================================================
400 ``invalid_grant``       :class:`~calbridge.errors.ReauthRequired` (token endpoints only)
400 other                   :class:`~calbridge.errors.InvalidRequest`
401                         refresh once and retry; a second 401 is ``ReauthRequired``
402                         :class:`PaymentRequired` (a ``NotSupported``: the plan lacks it)
403                         ``ReauthRequired`` (a scope is missing: connect again with it)
404                         :class:`~calbridge.errors.NotFound`
422                         ``InvalidRequest`` with ``field_errors`` from ``errors``
423                         :class:`AccountLocked`
429                         :class:`~calbridge.errors.RateLimited`
5xx                         :class:`~calbridge.errors.Unavailable`
anything else               :class:`~calbridge.errors.ProviderResponseError`
==========================  ===================================================================

Messages carry the method and the URL without its query, never a token or secret. The
token endpoints answer in the same format: :func:`token_error_for` maps them alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderError,
    ProviderResponseError,
    RateLimited,
    ReauthRequired,
    Unavailable,
)
from calbridge.toolkit import TokenAction, describe

__all__ = ["AccountLocked", "PaymentRequired", "error_for", "field_errors", "token_error_for"]

PROVIDER = "cronofy"


class PaymentRequired(NotSupported):
    """HTTP 402: the application's Cronofy plan does not include this feature."""

    def __init__(self, what: str) -> None:
        super().__init__(
            "plan",
            provider=PROVIDER,
            message=f"{what}: the application's Cronofy plan does not include this feature "
            "(HTTP 402); upgrade the plan or stop calling it",
        )
        self.status = 402


class AccountLocked(ProviderError):
    """HTTP 423: Cronofy has locked the account; it cannot be used until unlocked."""

    default_hint = "Contact Cronofy support or ask the user to reconnect."


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content) if response.content else None
    except ValueError:
        return None


def field_errors(body: Any) -> dict[str, list[str]]:
    """``{"errors": {field: [{key, description}]}}`` as field -> messages."""
    out: dict[str, list[str]] = {}
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, Mapping):
        return out
    for field, items in errors.items():
        messages: list[str] = []
        for item in items if isinstance(items, list) else [items]:
            if isinstance(item, Mapping):
                desc = item.get("description")
                key = item.get("key")
                text = str(desc or key or "invalid")
                if key and desc:
                    text = f"{desc} ({key})"
                messages.append(text)
            else:
                messages.append(str(item))
        out[str(field)] = messages
    return out


def error_for(response: httpx.Response, *, what: str) -> ProviderError:
    """The calbridge error for an unsuccessful Cronofy response (``what``: the call)."""
    status = response.status_code
    body = _json(response)
    if status == 400:
        error = body.get("error") if isinstance(body, Mapping) else None
        if error == "invalid_grant":
            return ReauthRequired(
                f"{what}: the grant is invalid (code used or unknown, redirect_uri mismatch, "
                "or the authorization was revoked)",
                provider=PROVIDER,
                status=400,
            )
        fields = field_errors(body)
        if error and not fields:
            fields = {"error": [str(error)]}
        return InvalidRequest(
            f"{what} was refused", provider=PROVIDER, status=400, field_errors=fields
        )
    if status == 401:
        return ReauthRequired(
            f"{what}: the access token was refused even after a refresh",
            provider=PROVIDER,
            status=401,
        )
    if status == 402:
        return PaymentRequired(what)
    if status == 403:
        return ReauthRequired(
            f"{what}: the authorization lacks a scope this call needs",
            provider=PROVIDER,
            status=403,
        )
    if status == 404:
        return NotFound(f"{what}: not found or not accessible", provider=PROVIDER, status=404)
    if status == 422:
        return InvalidRequest(
            f"{what} was refused", provider=PROVIDER, status=422, field_errors=field_errors(body)
        )
    if status == 423:
        return AccountLocked(f"{what}: the account is locked", provider=PROVIDER, status=423)
    if status == 429:
        return RateLimited(
            f"{what} was throttled (Cronofy allows 50 requests/s and 500/min per application)",
            provider=PROVIDER,
            retry_after=calbridge.parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:
        return Unavailable(
            f"{what}: Cronofy is unavailable",
            provider=PROVIDER,
            status=status,
            retry_after=calbridge.parse_retry_after(response.headers.get("retry-after")),
        )
    return ProviderResponseError(f"{what}: unexpected answer", provider=PROVIDER, status=status)


def token_error_for(response: httpx.Response, *, action: TokenAction) -> ProviderError:
    """The calbridge error for a refused token endpoint call (as :func:`error_for`)."""
    return error_for(response, what=describe(response.request))
