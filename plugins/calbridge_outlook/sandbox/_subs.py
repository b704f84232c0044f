"""Graph subscriptions in the sandbox: validation, notifications, lifecycle, expiry.

* Creating one first POSTs ``?validationToken=...`` (``text/plain``) to the
  notificationUrl and the lifecycleNotificationUrl; anything but a 200 echo of the token
  within ``validation_timeout`` seconds refuses the subscription (400).
* ``expirationDateTime`` may be at most ``max_subscription_minutes`` ahead (default
  10,080) on the sandbox clock; the subscription silently ends then. With a lifecycle URL,
  ``reauthorizationRequired`` goes out ``reauthorize_lead_minutes`` before. PATCH renews.
* Every native write to a watched calendar (whoever made it) POSTs a
  ``changeNotificationCollection`` carrying the subscription's clientState.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from calbridge import Secret
from calbridge.sandbox import DeliveryPolicy, NativeChange, User

from .._tz import parse_graph_datetime
from ._core import PROVIDER, GraphError, GraphView, not_found
from ._render import change_key
from ._state import SandboxSubscription

__all__ = [
    "create_subscription",
    "delete_subscription",
    "on_native_change",
    "renew_subscription",
    "send_lifecycle",
]

#: Graph retries a failing notification for up to 4 hours
POLICY = DeliveryPolicy(first_retry=30.0, factor=2.0, max_delay=1800.0, give_up_after=4 * 3600.0)
_CHANGE_TYPES = frozenset({"created", "updated", "deleted"})


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(p for p in (parts.query, urlencode(params)) if p)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


async def _validate(view: GraphView, url: str) -> bool:
    token = (
        "Validation: Testing client application reachability for subscription Request-Id: "
        f"{uuid.uuid4()}"
    )
    try:
        async with httpx.AsyncClient(
            timeout=view.settings.validation_timeout, transport=view.world.delivery.transport
        ) as client:
            response = await client.post(
                _with_query(url, validationToken=token),
                content=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text == token


def _resource(view: GraphView, user: User, resource: str) -> str | None:
    parts = [p for p in resource.strip().strip("/").split("/") if p]
    low = [p.lower() for p in parts]
    if low[:1] == ["users"] and len(parts) >= 2:
        view.mailbox(user, parts[1])
        parts, low = ["me", *parts[2:]], ["me", *low[2:]]
    if low == ["me", "events"]:
        return None
    if low == ["me", "calendar", "events"]:
        return view.calendar_of(user, None)
    if len(low) == 4 and low[1] == "calendars" and low[3] == "events":
        return view.calendar_of(user, parts[2])
    raise GraphError(400, "ExtensionError", f"Resource '{resource}' is not supported.")


def _expiry(view: GraphView, value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
    try:
        when = parse_graph_datetime(value, "UTC").astimezone(dt.UTC)
    except ValueError:
        raise GraphError(400, "InvalidRequest", "expirationDateTime is invalid.") from None
    now = view.now()
    limit = view.settings.max_subscription_minutes
    if when <= now:
        raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
    if when > now + dt.timedelta(minutes=limit):
        raise GraphError(
            400,
            "InvalidRequest",
            f"Subscription expiration can only be {limit} minutes in the future.",
        )
    return when


async def create_subscription(
    view: GraphView, user: User, client_id: str, body: dict[str, Any]
) -> SandboxSubscription:
    """POST /subscriptions."""
    url = body.get("notificationUrl")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise GraphError(400, "InvalidRequest", "notificationUrl must be an absolute URL.")
    if view.settings.require_https and not url.startswith("https://"):
        raise GraphError(400, "InvalidRequest", "The notificationUrl must use https.")
    change_types = frozenset(
        t.strip() for t in str(body.get("changeType") or "").split(",") if t.strip()
    )
    if not change_types or not change_types <= _CHANGE_TYPES:
        raise GraphError(400, "InvalidRequest", "changeType must be created, updated, deleted.")
    calendar_id = _resource(view, user, str(body.get("resource") or ""))
    expires = _expiry(view, body.get("expirationDateTime"))
    state = body.get("clientState")
    if state is not None and (not isinstance(state, str) or len(state) > 255):
        raise GraphError(400, "InvalidRequest", "clientState must be at most 255 characters.")
    lifecycle = body.get("lifecycleNotificationUrl")
    if lifecycle is not None and not isinstance(lifecycle, str):
        raise GraphError(400, "InvalidRequest", "lifecycleNotificationUrl must be a URL.")
    for target in filter(None, (url, lifecycle)):
        if not await _validate(view, target):
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Notification endpoint must respond "
                "with 200 OK to validation request.",
            )
    sub = SandboxSubscription(
        email=user.email,
        client_id=client_id,
        resource=str(body["resource"]),
        calendar_id=calendar_id,
        change_types=change_types,
        notification_url=url,
        lifecycle_url=lifecycle,
        client_state=Secret(state) if state else None,
        expires=expires,
        created=view.now(),
    )
    with view.lock:
        view.subscriptions[sub.id] = sub
    _schedule(view, sub)
    return sub


def _owned(view: GraphView, user: User, sub_id: str) -> SandboxSubscription:
    with view.lock:
        sub = view.subscriptions.get(sub_id)
    if sub is None or sub.email != user.email:
        raise not_found(f"The object '{sub_id}' doesn't exist.")
    return sub


def renew_subscription(
    view: GraphView, user: User, sub_id: str, body: dict[str, Any]
) -> SandboxSubscription:
    """PATCH /subscriptions/{id} (a new expirationDateTime; also reauthorizes)."""
    sub = _owned(view, user, sub_id)
    with view.lock:
        sub.expires = _expiry(view, body.get("expirationDateTime"))
        sub.generation += 1
    _schedule(view, sub)
    return sub


def delete_subscription(view: GraphView, user: User, sub_id: str) -> None:
    """DELETE /subscriptions/{id}."""
    sub = _owned(view, user, sub_id)
    with view.lock:
        view.subscriptions.pop(sub.id, None)


def _schedule(view: GraphView, sub: SandboxSubscription) -> None:
    generation = sub.generation
    clock = view.world.clock

    def current() -> bool:
        return view.subscriptions.get(sub.id) is sub and sub.generation == generation

    def expire() -> None:
        if current():
            with view.lock:
                view.subscriptions.pop(sub.id, None)

    def reauthorize() -> None:
        if current():
            send_lifecycle(view, sub, "reauthorizationRequired")

    clock.call_at(sub.expires, expire, name=f"graph subscription {sub.id} expiry")
    if sub.lifecycle_url:
        lead = dt.timedelta(minutes=view.settings.reauthorize_lead_minutes)
        when = max(view.now(), sub.expires - lead)
        clock.call_at(when, reauthorize, name=f"graph subscription {sub.id} reauthorize")


def _post(view: GraphView, sub: SandboxSubscription, url: str, items: list[dict[str, Any]]) -> None:
    body = json.dumps({"value": items}).encode("utf-8")
    view.world.delivery.deliver(
        PROVIDER,
        url,
        body,
        {"Content-Type": "application/json; charset=utf-8"},
        policy=POLICY,
        keep_trying=lambda: sub.id in view.subscriptions,
    )


def send_lifecycle(view: GraphView, sub: SandboxSubscription, event: str) -> None:
    """POST a lifecycle notification; ``subscriptionRemoved`` also ends the subscription."""
    if event not in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
        raise ValueError(f"unknown lifecycle event {event!r}")
    item = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": sub.expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "tenantId": view.tenant_id,
        "clientState": sub.client_state.reveal() if sub.client_state else None,
        "lifecycleEvent": event,
    }
    if event == "subscriptionRemoved":
        with view.lock:
            view.subscriptions.pop(sub.id, None)
    if sub.lifecycle_url:
        _post(view, sub, sub.lifecycle_url, [item])


def on_native_change(view: GraphView, change: NativeChange) -> None:
    """World listener: notify every live subscription watching the changed calendar."""
    try:
        user = view.world.user(change.user)
    except KeyError:
        return
    if user.native != "microsoft":
        return
    kind = change.kind.value
    now = view.now()
    with view.lock:
        subs = [
            s
            for s in view.subscriptions.values()
            if s.email == user.email
            and (s.calendar_id is None or s.calendar_id == change.calendar_id)
            and kind in s.change_types
            and s.expires > now
        ]
    event = change.event
    for sub in subs:
        resource = f"Users/{user.id}/Events/{event.id}"
        item = {
            "id": str(uuid.uuid4()),
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": sub.expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "changeType": kind,
            "resource": resource,
            "tenantId": view.tenant_id,
            "clientState": sub.client_state.reveal() if sub.client_state else None,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Event",
                "@odata.id": resource,
                "@odata.etag": f'W/"{change_key(event)}"',
                "id": event.id,
            },
        }
        repeats = view.settings.updated_repeats if kind == "updated" else 1
        for _ in range(max(1, repeats)):
            _post(view, sub, sub.notification_url, [{**item, "id": str(uuid.uuid4())}])
