"""Google push: events.watch channels, channels.stop, and notification verification.

Google does not sign notifications. A notification is an empty POST whose ``X-Goog-*``
headers name the channel; what authenticates it is the per-channel secret token echoed
in ``X-Goog-Channel-Token`` (compared in constant time) together with a channel id and
resource id that match a channel calbridge opened. Channels cannot be renewed: a new,
overlapping channel is opened and the old one stopped.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from typing import Any

from calbridge import (
    Channel,
    ChannelLookup,
    Notification,
    NotificationKind,
    Secret,
    WebhookReply,
    WebhookRequest,
)
from calbridge.errors import NotificationRejected
from calbridge.toolkit import wire_dict

from ._wire import GChannel, parse

__all__ = [
    "MAX_TTL",
    "channel_from_wire",
    "new_channel_id",
    "new_token",
    "parse_notification",
    "watch_body",
]

PROVIDER = "google"
#: Google caps events.watch channels at 7 days
MAX_TTL = 7 * 24 * 3600
DEFAULT_TTL = MAX_TTL

_STATES = {
    "sync": NotificationKind.SYNC,
    "exists": NotificationKind.CHANGE,
    "not_exists": NotificationKind.CHANGE,
}


def new_channel_id() -> str:
    """A fresh channel id (Google: unique, at most 64 characters)."""
    return uuid.uuid4().hex


def new_token() -> Secret:
    """A fresh per-channel secret token."""
    return Secret(secrets.token_urlsafe(32))


def watch_body(
    *, channel_id: str, address: str, token: Secret, ttl_seconds: int | None, now: float
) -> dict[str, Any]:
    """The events.watch request body (expiration in epoch milliseconds, capped at 7 days)."""
    ttl = min(MAX_TTL, ttl_seconds or DEFAULT_TTL)
    channel = GChannel(
        id=channel_id,
        type="web_hook",
        address=address,
        token=token,
        expiration=str(int((now + ttl) * 1000)),
    )
    # the token goes to Google, which echoes it on every notification
    return wire_dict(channel, reveal_secrets=True)


def channel_from_wire(
    body: Any,
    *,
    callback_url: str,
    calendar_id: str,
    token: Secret,
    account_id: str | None,
    filters: dict[str, str],
) -> Channel:
    """The domain :class:`Channel` for an events.watch response (the token never in ``raw``)."""
    wire = parse(body, GChannel, what="channel")
    raw = {k: v for k, v in dict(body).items() if k != "token"}
    expires = int(int(wire.expiration) / 1000) if wire.expiration else None
    return Channel(
        provider=PROVIDER,
        id=wire.id,
        callback_url=callback_url,
        account_id=account_id,
        calendar_ids=(calendar_id,),
        filters=filters,
        expires_at=expires,
        secret=token,
        resource_id=wire.resource_id,
        raw=raw,
    )


def _reject(message: str) -> NotificationRejected:
    return NotificationRejected(message, provider=PROVIDER)


async def parse_notification(
    request: WebhookRequest, channels: ChannelLookup
) -> list[Notification]:
    """Verify a Google push request; raise NotificationRejected on anything unknown or forged."""
    headers = request.headers
    channel_id = headers.get("x-goog-channel-id")
    resource_id = headers.get("x-goog-resource-id")
    state = headers.get("x-goog-resource-state")
    number = headers.get("x-goog-message-number")
    token = headers.get("x-goog-channel-token")
    if not channel_id or not resource_id or not state or not number:
        raise _reject("not a Google notification: X-Goog-* headers are missing")
    if not number.isdigit():
        raise _reject("X-Goog-Message-Number is not a number")
    channel = await channels(channel_id)
    if channel is None or channel.provider != PROVIDER:
        raise _reject("unknown channel")
    expected = channel.secret.reveal() if channel.secret is not None else ""
    given = token or ""
    # evaluate every check before deciding, so the timing does not tell which one failed
    token_ok = hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
    resource_ok = hmac.compare_digest(
        resource_id.encode("utf-8"), (channel.resource_id or "").encode("utf-8")
    )
    if not (token_ok and resource_ok and expected and channel.resource_id):
        raise _reject("the channel token or resource id does not match")
    kind = _STATES.get(state, NotificationKind.IGNORED)
    raw = {
        "channel_id": channel_id,
        "resource_id": resource_id,
        "resource_state": state,
        "message_number": int(number),
        "resource_uri": headers.get("x-goog-resource-uri"),
        "channel_expiration": headers.get("x-goog-channel-expiration"),
    }
    return [
        Notification(
            provider=PROVIDER,
            kind=kind,
            delivery_key=f"google:{channel_id}:{number}",
            channel_id=channel_id,
            account_id=channel.account_id,
            calendar_ids=channel.calendar_ids,
            reply=WebhookReply(status=200),
            raw=raw,
        )
    ]
