"""Cronofy push notifications: signature check and parsing. Never calls Cronofy.

Cronofy signs each notification with ``Cronofy-HMAC-SHA256: base64(HMAC-SHA256(raw body,
client secret))``. While the application's secret is being rotated the header is a
comma-separated list, one value per active secret; a notification is genuine when any
value matches any configured secret (constant-time comparisons). The body is checked as
received: JSON that was re-serialised on the way does not verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence

import attrs

import calbridge
from calbridge.errors import NotificationRejected

from ._wire import NotificationEnvelope, parse

__all__ = [
    "HEADER",
    "KINDS",
    "AuthorizationCallback",
    "authorization_callback",
    "sign",
    "signature_valid",
    "verify",
]

PROVIDER = "cronofy"
HEADER = "cronofy-hmac-sha256"

KINDS = {
    "change": calbridge.NotificationKind.CHANGE,
    "verification": calbridge.NotificationKind.VERIFICATION,
    "profile_disconnected": calbridge.NotificationKind.PROFILE_DISCONNECTED,
    "profile_initial_sync_completed": calbridge.NotificationKind.INITIAL_SYNC_COMPLETED,
}


def sign(body: bytes, secret: calbridge.Secret | str) -> str:
    """The ``Cronofy-HMAC-SHA256`` value for ``body`` under one client secret."""
    key = secret.reveal() if isinstance(secret, calbridge.Secret) else secret
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_valid(header: str | None, body: bytes, secrets: Sequence[calbridge.Secret]) -> bool:
    """True when any comma-separated value of ``header`` signs ``body`` with any secret."""
    if not header or not secrets:
        return False
    given = [v.strip().encode("ascii", "replace") for v in header.split(",") if v.strip()]
    ok = False
    for secret in secrets:
        expected = sign(body, secret).encode("ascii")
        for value in given:
            # no early exit: every comparison runs, in constant time each
            ok |= hmac.compare_digest(expected, value)
    return ok


async def verify(
    request: calbridge.WebhookRequest,
    channels: calbridge.ChannelLookup,
    secrets: Iterable[calbridge.Secret],
) -> list[calbridge.Notification]:
    """Verify and parse one Cronofy notification request."""
    secret_list = [s for s in secrets if s]
    if not secret_list:
        raise NotificationRejected(
            "no client secret is configured to verify Cronofy notifications",
            provider=PROVIDER,
            status=500,
        )
    if request.method != "POST":
        raise NotificationRejected("notifications arrive as POST", provider=PROVIDER, status=405)
    if not signature_valid(request.headers.get(HEADER), request.body, secret_list):
        raise NotificationRejected(
            "the Cronofy-HMAC-SHA256 signature is missing or does not match the body",
            provider=PROVIDER,
        )
    try:
        data = json.loads(request.body)
    except ValueError:
        raise NotificationRejected(
            "the notification body is not JSON", provider=PROVIDER, status=400
        ) from None
    try:
        envelope = parse(data, NotificationEnvelope)
    except calbridge.errors.ProviderResponseError:
        raise NotificationRejected(
            "the notification body is not a Cronofy notification", provider=PROVIDER, status=400
        ) from None
    channel = await channels(envelope.channel.channel_id)
    if channel is None or channel.provider != PROVIDER:
        raise NotificationRejected(
            "the notification names a channel calbridge does not know",
            provider=PROVIDER,
            status=404,
        )
    kind = KINDS.get(envelope.notification.type, calbridge.NotificationKind.IGNORED)
    calendar_ids = tuple(envelope.channel.filters.calendar_ids or channel.calendar_ids)
    return [
        calbridge.Notification(
            provider=PROVIDER,
            kind=kind,
            # Cronofy sends no delivery id: a retried delivery repeats the body exactly
            delivery_key="cronofy:" + hashlib.sha256(request.body).hexdigest(),
            channel_id=channel.id,
            account_id=channel.account_id,
            calendar_ids=calendar_ids,
            changes_since=envelope.notification.changes_since,
            raw=data,
        )
    ]


@attrs.frozen(kw_only=True)
class AuthorizationCallback:
    """What Cronofy POSTs to an Enterprise Connect ``callback_url``: a code, or an error."""

    code: str | None = attrs.field(default=None, repr=False)
    state: str | None = None
    error: str | None = None
    error_key: str | None = None
    error_description: str | None = None


def authorization_callback(
    request: calbridge.WebhookRequest, secrets: Iterable[calbridge.Secret]
) -> AuthorizationCallback:
    """Verify (same signature as notifications) and parse an Enterprise Connect callback."""
    if not signature_valid(request.headers.get(HEADER), request.body, [s for s in secrets if s]):
        raise NotificationRejected(
            "the Cronofy-HMAC-SHA256 signature is missing or does not match the body",
            provider=PROVIDER,
        )
    try:
        data = json.loads(request.body)
        auth = data["authorization"]
        if not isinstance(auth, dict):
            raise TypeError
        fields = {k: auth.get(k) for k in attrs.fields_dict(AuthorizationCallback)}
        if not all(v is None or isinstance(v, str) for v in fields.values()):
            raise TypeError
        callback = AuthorizationCallback(**fields)
    except (ValueError, KeyError, TypeError):
        raise NotificationRejected(
            "not a Cronofy authorization callback", provider=PROVIDER, status=400
        ) from None
    if callback.code is None and callback.error is None:
        raise NotificationRejected(
            "the authorization callback has neither code nor error", provider=PROVIDER, status=400
        )
    return callback
