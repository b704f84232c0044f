"""Query-parameter validation after the calendar v3 discovery document.

:data:`METHODS` is the parameter table of the methods the sandbox serves, transcribed
from ``googleapiclient/discovery_cache/documents/calendar.v3.json`` (revision 20261030);
``tests/plugins/google`` checks it against the installed document so drift is caught.
Unknown parameters are ignored, as Google does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["METHODS", "GoogleError", "Param", "parse_rfc3339", "validate"]


@attrs.frozen
class Param:
    """One query parameter of a method (``type``: string, integer or boolean; ``fmt``:
    ``date-time`` or None)."""

    type: str = "string"
    fmt: str | None = None
    repeated: bool = False
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class GoogleError(Exception):
    """An error answer in Google's envelope (raised inside handlers, rendered by the app)."""

    status: int
    reason: str
    message: str
    domain: str = "global"
    location: str | None = None
    location_type: str | None = None


_S = Param()
_B = Param("boolean")
_DT = Param("string", "date-time")
_EVENT_TYPES = Param(
    repeated=True,
    enum=("birthday", "default", "focusTime", "fromGmail", "outOfOffice", "workingLocation"),
)
_LIST = {
    "alwaysIncludeEmail": _B,
    "eventTypes": _EVENT_TYPES,
    "iCalUID": _S,
    "maxAttendees": Param("integer", minimum=1),
    "maxResults": Param("integer", minimum=1),
    "orderBy": Param(enum=("startTime", "updated")),
    "pageToken": _S,
    "privateExtendedProperty": Param(repeated=True),
    "q": _S,
    "sharedExtendedProperty": Param(repeated=True),
    "showDeleted": _B,
    "showHiddenInvitations": _B,
    "singleEvents": _B,
    "syncToken": _S,
    "timeMax": _DT,
    "timeMin": _DT,
    "timeZone": _S,
    "updatedMin": _DT,
}
_WRITE = {
    "conferenceDataVersion": Param("integer", minimum=0, maximum=1),
    "eventLabelVersion": Param("integer", minimum=0, maximum=1),
    "maxAttendees": Param("integer", minimum=1),
    "sendNotifications": _B,
    "sendUpdates": Param(enum=("all", "externalOnly", "none")),
    "supportsAttachments": _B,
}

METHODS: Mapping[str, Mapping[str, Param]] = {
    "calendar.events.list": _LIST,
    "calendar.events.watch": _LIST,
    "calendar.events.instances": {
        "alwaysIncludeEmail": _B,
        "maxAttendees": Param("integer", minimum=1),
        "maxResults": Param("integer", minimum=1),
        "originalStart": _S,
        "pageToken": _S,
        "showDeleted": _B,
        "timeMax": _DT,
        "timeMin": _DT,
        "timeZone": _S,
    },
    "calendar.events.get": {
        "alwaysIncludeEmail": _B,
        "maxAttendees": Param("integer", minimum=1),
        "timeZone": _S,
    },
    "calendar.events.insert": _WRITE,
    "calendar.events.update": {**_WRITE, "alwaysIncludeEmail": _B},
    "calendar.events.patch": {**_WRITE, "alwaysIncludeEmail": _B},
    "calendar.events.delete": {
        "sendNotifications": _B,
        "sendUpdates": Param(enum=("all", "externalOnly", "none")),
    },
    "calendar.calendarList.list": {
        "maxResults": Param("integer", minimum=1),
        "minAccessRole": Param(
            enum=("freeBusyReader", "owner", "reader", "writer", "writerWithoutPrivateAccess")
        ),
        "pageToken": _S,
        "showDeleted": _B,
        "showHidden": _B,
        "showOwnOrganizationOnly": _B,
        "syncToken": _S,
    },
    "calendar.calendarList.get": {},
    "calendar.channels.stop": {},
    "calendar.freebusy.query": {},
}


def _invalid(name: str, value: str, why: str = "") -> GoogleError:
    return GoogleError(
        status=400,
        reason="invalidParameter",
        message=f"Invalid value '{value}' for parameter '{name}'.{why}",
        location=name,
        location_type="parameter",
    )


def parse_rfc3339(value: str, name: str) -> dt.datetime:
    """An RFC 3339 timestamp with its required offset; anything else is a 400."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise GoogleError(
            status=400,
            reason="badRequest",
            message="Bad Request",
            location=name,
            location_type="parameter",
        ) from None
    if parsed.tzinfo is None or len(value) < 11 or "T" not in value.upper():
        raise GoogleError(
            status=400,
            reason="badRequest",
            message="Bad Request",
            location=name,
            location_type="parameter",
        )
    return parsed.replace(microsecond=0)


def validate(method: str, query: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Typed parameters of ``method`` from a raw query (repeated ones as lists)."""
    spec = METHODS[method]
    out: dict[str, Any] = {}
    for name, raw in query:
        param = spec.get(name)
        if param is None:
            continue
        value: Any = raw
        if param.enum and raw not in param.enum:
            raise _invalid(name, raw, f" Allowed values: [{', '.join(param.enum)}]")
        if param.type == "boolean":
            if raw not in ("true", "false"):
                raise _invalid(name, raw, " Expected 'true' or 'false'.")
            value = raw == "true"
        elif param.type == "integer":
            try:
                value = int(raw)
            except ValueError:
                raise _invalid(name, raw) from None
            if param.minimum is not None and value < param.minimum:
                raise _invalid(name, raw, f" Values must be at least {param.minimum}.")
            if param.maximum is not None and value > param.maximum:
                raise _invalid(name, raw, f" Values must be at most {param.maximum}.")
        elif param.fmt == "date-time":
            value = parse_rfc3339(raw, name)
        if param.repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out
