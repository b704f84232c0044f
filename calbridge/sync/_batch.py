"""Change batches delivered to the application, and Standard Webhooks signing.

A :class:`ChangeBatch` is what a sync round hands the application: the events it upserted
and the ids it deleted in one calendar, with a stable id for deduplication. Outbound
webhooks carry its JSON form signed per the Standard Webhooks spec
(https://www.standardwebhooks.com): ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">`` with a ``whsec_``-prefixed base64 secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._serialization import make_converter
from ..errors import CalbridgeError
from ..models import Event, Secret

__all__ = [
    "DEFAULT_TOLERANCE",
    "ChangeBatch",
    "WebhookVerificationError",
    "batch_from_json",
    "batch_to_json",
    "generate_webhook_secret",
    "sign_standard_webhook",
    "verify_standard_webhook",
]

#: seconds a Standard Webhooks timestamp may be off (either way)
DEFAULT_TOLERANCE: Final = 300
_PREFIX: Final = "whsec_"

_converter = make_converter()


@attrs.frozen(kw_only=True)
class ChangeBatch:
    """Changes of one calendar committed by one sync round.

    Attributes:
        id: stable across redeliveries (deduplicate on it).
        account_id: calbridge's account id.
        provider: the provider name.
        calendar_id: the provider's calendar id.
        upserted: events created or changed, as now cached.
        deleted: ids of events that are gone.
        cursor: the sync cursor the round ended at (None for a window reconciliation).
        full: True when the round was a full read (reconciliation or cursor reset).
        app_user_id: the application user owning the account.
        sequence: position of this batch within its round (0-based).
        identities: the app-level identity of every id in ``upserted`` and ``deleted``,
            the same whichever provider reports the event, before and after a migration:
            key the application's copy on it, not on provider ids. It is the app's
            idempotency key where the event was written through calbridge, else its
            iCalendar UID; an occurrence of a series adds ``@<original start>``
            (``YYYY-MM-DD`` or ``YYYYMMDDTHHMMSSZ``). Once told, an identity never changes:
            an event first reported before its key was known keeps its UID identity.
        key_identities: for ids written through calbridge (where known when the round
            committed), the identity under the app's key (``key``, or
            ``key@<original start>`` for an occurrence); the feed prefers it for events
            the app has not been told about yet.

    Series are delivered as their occurrences (in Cronofy's sync window, 42 days back to
    201 days ahead), whichever provider reports them; a cancelled occurrence is a deletion.
    """

    id: str
    account_id: str
    provider: str
    calendar_id: str
    upserted: tuple[Event, ...] = ()
    deleted: tuple[str, ...] = ()
    cursor: str | None = None
    full: bool = False
    app_user_id: str | None = None
    sequence: int = 0
    identities: dict[str, str] = attrs.field(factory=dict, hash=False)
    key_identities: dict[str, str] = attrs.field(factory=dict, hash=False)

    def __len__(self) -> int:
        return len(self.upserted) + len(self.deleted)

    def identity(self, event_id: str) -> str:
        """The app-level identity of an upserted or deleted id (the id itself if unknown)."""
        return self.identities.get(event_id, event_id)


def batch_to_json(batch: ChangeBatch) -> dict[str, Any]:
    """The JSON-ready form (what outbound webhooks carry and jobs store)."""
    data: dict[str, Any] = _converter.unstructure(batch)
    return data


def batch_from_json(data: Mapping[str, Any]) -> ChangeBatch:
    """Inverse of :func:`batch_to_json`."""
    return _converter.structure(dict(data), ChangeBatch)


# ---------------------------------------------------------------- Standard Webhooks


class WebhookVerificationError(CalbridgeError):
    """A Standard Webhooks delivery failed verification."""


def generate_webhook_secret() -> Secret:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return Secret(_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode())


def _key(secret: Secret | str) -> bytes:
    text = secret.reveal() if isinstance(secret, Secret) else secret
    text = text.removeprefix(_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the webhook secret is not base64") from None
    if len(key) < 24:
        raise WebhookVerificationError("the webhook secret must be at least 24 bytes")
    return key


def sign_standard_webhook(secret: Secret | str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_standard_webhook(
    secrets_: Secret | str | Iterable[Secret | str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Verify a Standard Webhooks delivery and return its JSON body.

    ``secrets_`` may list several secrets (rotation: ``[new, old]``); the
    ``webhook-signature`` header may carry several space-separated ``v1,`` entries, any
    one of which may match. Malformed input raises :class:`WebhookVerificationError`,
    never anything else. Use it in the receiving service (or its tests).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signature = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signature:
        raise WebhookVerificationError("missing webhook-id, -timestamp or -signature header")
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not a number")
    ts = int(stamp)
    if ts < now - tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if ts > now + tolerance:
        raise WebhookVerificationError("webhook-timestamp is too new")
    keys = [secrets_] if isinstance(secrets_, (Secret, str)) else list(secrets_)
    given: list[bytes] = []
    for entry in signature.split(" "):
        version, sep, value = entry.partition(",")
        if sep and version == "v1" and value:
            given.append(value.encode("utf-8", "replace"))
    ok = False
    for key in keys:
        expected = sign_standard_webhook(key, msg_id=msg_id, timestamp=ts, body=body)[3:]
        for candidate in given:
            ok |= hmac.compare_digest(expected.encode(), candidate)
    if not ok:
        raise WebhookVerificationError("no matching signature")
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return data
