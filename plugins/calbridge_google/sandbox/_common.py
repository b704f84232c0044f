"""Pieces shared by the Google sandbox's handlers: the error envelope and request context."""

from __future__ import annotations

import json
from typing import Any

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse

from calbridge.sandbox import NativeCalendar

from ._params import GoogleError

__all__ = ["Ctx", "deleted", "error_response", "not_found", "read_json"]


def error_response(err: GoogleError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Google's error envelope."""
    item: dict[str, Any] = {"domain": err.domain, "reason": err.reason, "message": err.message}
    if err.location_type:
        item["locationType"] = err.location_type
    if err.location:
        item["location"] = err.location
    body = {"error": {"errors": [item], "code": err.status, "message": err.message}}
    return JSONResponse(body, status_code=err.status, headers=headers)


def not_found() -> GoogleError:
    return GoogleError(status=404, reason="notFound", message="Not Found")


def deleted() -> GoogleError:
    return GoogleError(status=410, reason="deleted", message="Resource has been deleted")


@attrs.define
class Ctx:
    """Who is calling, and the calendar the path names."""

    email: str
    cal: NativeCalendar


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body (an empty body is ``{}``); anything else is Google's parseError."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise GoogleError(status=400, reason="parseError", message="Parse Error") from None
    if not isinstance(data, dict):
        raise GoogleError(status=400, reason="parseError", message="Parse Error")
    return data
