"""Microsoft Graph v1.0 JSON as attrs classes (the wire model), apart from the domain model.

Field names follow Python style and carry Graph's camelCase name as the attrs ``alias``;
:data:`WIRE` (a cattrs converter with ``use_alias=True``) reads Graph's JSON. Unknown keys
are ignored (Graph adds properties). Shapes: msgraph-sdk-python's generated models
(``subscription``). Events, read by the thousand, have their own
msgspec model (``_wire_read``); request bodies are built in ``_convert``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from calbridge.errors import ProviderResponseError

__all__ = [
    "WIRE",
    "Subscription",
    "parse",
]

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Subscription:
    """``subscription`` (``clientState`` is deliberately not mapped: it stays a Secret)."""

    id: str
    resource: str | None = None
    change_type: str | None = attrs.field(default=None, alias="changeType")
    notification_url: str | None = attrs.field(default=None, alias="notificationUrl")
    lifecycle_notification_url: str | None = attrs.field(
        default=None, alias="lifecycleNotificationUrl"
    )
    expiration_date_time: str | None = attrs.field(default=None, alias="expirationDateTime")


def _make() -> cattrs.Converter:
    return make_converter(use_alias=True)


#: the converter for Graph JSON
WIRE = _make()


def parse(data: Any, cls: type[T]) -> T:
    """Structure Graph JSON into ``cls``; unreadable input raises ProviderResponseError."""
    if isinstance(data, dict):  # Graph writes null for absent values; defaults apply
        data = {k: v for k, v in data.items() if v is not None}
    try:
        return WIRE.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        message = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else type(exc).__name__
        )
        raise ProviderResponseError(
            f"Graph sent an unreadable {cls.__name__}: {message}", provider="outlook"
        ) from None
