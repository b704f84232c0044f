"""The Graph sandbox's own state: settings, token shapes, delta rounds, subscriptions.

Everything native (users, calendars, events) lives in the shared
:class:`calbridge.sandbox.World`; this is only what Microsoft keeps beside it. Graph
properties the world does not model (``showAs`` ``oof``/``workingElsewhere``,
``sensitivity`` ``personal``, ``transactionId``) are kept here as overlays keyed by event
id and shown only while they agree with the world's own value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import attrs

from calbridge import Secret
from calbridge.sandbox import RateLimit, TokenShapes, opaque_token

__all__ = [
    "GRAPH_TOKENS",
    "DeltaRound",
    "DeltaState",
    "GraphSettings",
    "Overlay",
    "SandboxSubscription",
]


#: Microsoft's codes and tokens: opaque, shaped like nothing in particular
GRAPH_TOKENS = TokenShapes(
    code=opaque_token("EwB", 24),
    access=opaque_token("EwB", 32),
    refresh=opaque_token("EwB", 48),
)


@attrs.define(kw_only=True)
class GraphSettings:
    """Knobs of the Graph sandbox (``world.views["graph"].settings``)."""

    access_token_ttl: int = 3599
    #: Outlook event subscriptions without resource data (minutes)
    max_subscription_minutes: int = 10_080
    #: send reauthorizationRequired this many minutes before a subscription expires
    reauthorize_lead_minutes: int = 60
    #: seconds the notificationUrl has to answer the validation request
    validation_timeout: float = 10.0
    #: concurrent requests per mailbox before 429 ApplicationThrottled
    mailbox_concurrency: int = 4
    #: per-mailbox rates, ``(requests, seconds)`` sliding windows (Graph: 10,000 per 10
    #: minutes per application and mailbox); none enforced by default
    mailbox_rate_limits: tuple[RateLimit, ...] = ()
    #: Retry-After sent with ApplicationThrottled (fractional, as Graph does)
    throttle_retry_after: float = 0.35
    #: delta tokens older than this (sandbox seconds) answer 410; None keeps them
    delta_token_ttl: float | None = 7 * 24 * 3600.0
    #: report changes to events outside the window as ``@removed`` (Graph does)
    delta_noise: bool = True
    #: default ``$top`` of calendarView and delta pages
    page_size: int = 10
    #: seconds a ``$skiptoken`` round stays readable
    round_ttl: float = 3600.0
    #: how many ``updated`` notifications one edit produces (Graph often sends several)
    updated_repeats: int = 1
    #: refuse notificationUrls that are not https (Graph does; loopback tests use http)
    require_https: bool = False


@attrs.define(kw_only=True)
class Overlay:
    """Graph-only values of one event, valid while the world agrees with them."""

    show_as: str | None = None
    sensitivity: str | None = None


@attrs.define(kw_only=True)
class DeltaState:
    """What a ``$deltatoken`` stands for."""

    email: str
    calendar_id: str
    start: dt.datetime
    end: dt.datetime
    sequence: int
    #: occurrence ids inside the window at the end of the round
    ids: frozenset[str]
    issued: dt.datetime


@attrs.define(kw_only=True)
class DeltaRound:
    """A delta round being paged through with ``$skiptoken``."""

    email: str
    pages: list[list[dict[str, Any]]]
    delta_token: str
    created: dt.datetime


@attrs.define(kw_only=True)
class SandboxSubscription:
    """A Graph subscription."""

    id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    email: str
    client_id: str
    resource: str
    #: None = every calendar of the mailbox
    calendar_id: str | None
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: Secret | None
    expires: dt.datetime
    created: dt.datetime
    generation: int = 0

    def json(self, tenant_id: str) -> dict[str, Any]:
        """The subscription resource (clientState is echoed back, as Graph does)."""
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.client_id,
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state.reveal() if self.client_state else None,
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": self.expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "creatorId": tenant_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationQueryOptions": None,
            "notificationUrlAppId": None,
        }
