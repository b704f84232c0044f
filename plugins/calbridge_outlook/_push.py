"""Graph change notifications: subscriptions, the validation handshake, verification.

* A subscription watches ``/me/calendars/{id}/events`` (``/me/events`` when no calendar
  is named) with a fresh per-subscription ``clientState`` secret and a
  ``lifecycleNotificationUrl`` (by default the same URL: items tell themselves apart).
* Graph first POSTs ``?validationToken=...``; the answer is 200, ``text/plain``, the
  token itself (a :class:`calbridge.Notification` of kind VERIFICATION carries the reply).
* Graph signs nothing in a plain notification: each item is authenticated by its
  ``subscriptionId`` naming a known channel and its ``clientState`` equal to that
  channel's secret (compared in constant time). Items that fail are dropped; a request
  with no authentic item is rejected.
* Lifecycle items: ``reauthorizationRequired`` -> RENEW, ``subscriptionRemoved`` ->
  RESUBSCRIBE, ``missed`` -> RESYNC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
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
from calbridge.errors import NotificationRejected, ProviderResponseError

from ._tz import parse_graph_datetime
from ._wire import Subscription, parse

__all__ = [
    "MAX_MINUTES",
    "channel_from_wire",
    "expiration",
    "new_client_state",
    "parse_notification",
]

PROVIDER = "outlook"
log = logging.getLogger("calbridge.outlook")
#: Graph's maximum lifetime of an Outlook event subscription without resource data
MAX_MINUTES = 10_080
#: stay this far under the maximum (clock skew between us and Graph)
_MARGIN_MINUTES = 15
_MAX_VALIDATION_TOKEN = 4096
_LIFECYCLE = {
    "reauthorizationRequired": NotificationKind.RENEW,
    "subscriptionRemoved": NotificationKind.RESUBSCRIBE,
    "missed": NotificationKind.RESYNC,
}


def new_client_state() -> Secret:
    """A fresh ``clientState`` (Graph allows up to 128 characters)."""
    return Secret(secrets.token_urlsafe(48))


def expiration(now: float, ttl_seconds: int | None, max_minutes: int = MAX_MINUTES) -> str:
    """``expirationDateTime`` for a lifetime of ``ttl_seconds`` (capped under the maximum)."""
    cap = (max_minutes - _MARGIN_MINUTES) * 60
    seconds = min(cap, ttl_seconds) if ttl_seconds else cap
    when = dt.datetime.fromtimestamp(now + seconds, dt.UTC).replace(microsecond=0)
    return when.isoformat().replace("+00:00", ".0000000Z")


def channel_from_wire(
    body: dict[str, Any],
    *,
    callback_url: str,
    calendar_ids: tuple[str, ...],
    secret: Secret,
    account_id: str | None,
    filters: dict[str, str],
) -> Channel:
    """The domain :class:`Channel` of a subscription (``clientState`` never in ``raw``)."""
    sub = parse(body, Subscription)
    if sub.id is None:
        raise ProviderResponseError("the subscription Graph answered has no id", provider=PROVIDER)
    expires = (
        int(parse_graph_datetime(sub.expiration_date_time, "UTC").timestamp())
        if sub.expiration_date_time
        else None
    )
    return Channel(
        provider=PROVIDER,
        id=sub.id,
        callback_url=callback_url,
        account_id=account_id,
        calendar_ids=calendar_ids,
        filters=filters,
        expires_at=expires,
        secret=secret,
        resource_id=sub.resource,
        raw={k: v for k, v in body.items() if k != "clientState"},
    )


def _reject(message: str, status: int = 401) -> NotificationRejected:
    return NotificationRejected(message, provider=PROVIDER, status=status)


def _validation(token: str) -> list[Notification]:
    if not token or len(token) > _MAX_VALIDATION_TOKEN:
        raise _reject("bad validationToken", status=400)
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
    return [
        Notification(
            provider=PROVIDER,
            kind=NotificationKind.VERIFICATION,
            delivery_key=f"outlook:validation:{digest}",
            reply=WebhookReply(status=200, body=token.encode("utf-8"), content_type="text/plain"),
        )
    ]


def _same(given: Any, channel: Channel) -> bool:
    expected = channel.secret.reveal() if channel.secret is not None else ""
    text = given if isinstance(given, str) else ""
    ok = hmac.compare_digest(text.encode("utf-8"), expected.encode("utf-8"))
    return ok and bool(expected)


async def parse_notification(
    request: WebhookRequest, channels: ChannelLookup
) -> list[Notification]:
    """Verify a Graph webhook request (validation, change or lifecycle notifications)."""
    token = request.query.get("validationToken")
    if token is not None:
        return _validation(token)
    try:
        payload = json.loads(request.body)
    except ValueError:
        raise _reject("not a Graph notification: the body is not JSON", status=400) from None
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise _reject("not a Graph notification: no value[]", status=400)
    out: list[Notification] = []
    dropped = 0
    for item in items:
        if not isinstance(item, dict):
            dropped += 1
            continue
        sub_id = item.get("subscriptionId")
        channel = await channels(sub_id) if isinstance(sub_id, str) and sub_id else None
        if channel is None or channel.provider != PROVIDER:
            dropped += 1
            continue
        if not _same(item.get("clientState"), channel):
            dropped += 1
            continue
        raw = {k: v for k, v in item.items() if k != "clientState"}
        lifecycle = item.get("lifecycleEvent")
        if lifecycle is not None:
            kind = _LIFECYCLE.get(str(lifecycle), NotificationKind.IGNORED)
            key = f"outlook:{sub_id}:{lifecycle}:{item.get('subscriptionExpirationDateTime')}"
        else:
            kind = NotificationKind.CHANGE
            found = item.get("resourceData")
            data: dict[str, Any] = found if isinstance(found, dict) else {}
            marker = data.get("@odata.etag") or item.get("changeType") or ""
            key = f"outlook:{sub_id}:{data.get('id') or item.get('resource')}:{marker}"
        out.append(
            Notification(
                provider=PROVIDER,
                kind=kind,
                delivery_key=key,
                channel_id=sub_id,
                account_id=channel.account_id,
                calendar_ids=channel.calendar_ids,
                reply=WebhookReply(status=202),
                raw=raw,
            )
        )
    if dropped:
        log.warning("dropped %d Graph notification item(s) failing verification", dropped)
    if not out:
        raise _reject("no authentic item: unknown subscription or clientState mismatch")
    return out
