"""Test helpers for code that uses the Cronofy provider.

* Recorded-shape payloads (:func:`token_answer`, :func:`event_json`, :func:`events_page`),
  taken from docs.cronofy.com examples and the official SDKs' fixtures.
* :class:`FakeCronofy`: an ``httpx.MockTransport`` handler answering by method and path
  and recording every request, for unit tests with no network.

For tests against the faithful emulator, use the sandbox (``calbridge_cronofy.sandbox``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import httpx

__all__ = [
    "API",
    "APP",
    "CLIENT_SECRET",
    "FakeCronofy",
    "Handler",
    "event_json",
    "events_page",
    "ok",
    "token_answer",
]

#: the hosts FakeCronofy tests use (data centre ``uk``)
API = "https://api-uk.cronofy.com"
APP = "https://app-uk.cronofy.com"
#: pycronofy's published test secret (its HMAC vector uses it)
CLIENT_SECRET = "opposable thumbs"  # noqa: S105


def token_answer(**extra: Any) -> dict[str, Any]:
    """A code-exchange answer (docs example)."""
    return {
        "token_type": "bearer",
        "access_token": "P531x88i05Ld2yXHIQ7WjiEyqlmOHsgI",
        "expires_in": 3600,
        "refresh_token": "3gBYG1XamYDUEXUyybbummQWEe5YqPmf",
        "scope": "create_event delete_event",
        "account_id": "acc_5ba21743f408617d1269ea1e",
        "sub": "acc_5ba21743f408617d1269ea1e",
        "linking_profile": {
            "provider_name": "google",
            "profile_id": "pro_n23kjnwrw2",
            "profile_name": "example@cronofy.com",
        },
        **extra,
    }


def event_json(n: int = 0, **over: Any) -> dict[str, Any]:
    """One Read Events entry (docs example, an external event)."""
    base: dict[str, Any] = {
        "calendar_id": "cal_n23kjnwrw2_jsdfjksn234",
        "event_uid": f"evt_external_54008b1a4a4173{n:04d}",
        "summary": f"Company Retreat {n}",
        "description": "Escape to the country",
        "start": "2026-01-06T09:00:00Z",
        "end": "2026-01-06T10:00:00Z",
        "deleted": False,
        "created": "2026-01-01T08:00:01Z",
        "updated": "2026-01-01T09:24:16Z",
        "location": {"description": "Beach"},
        "participation_status": "needs_action",
        "attendees": [
            {
                "email": "example@cronofy.com",
                "display_name": "Example Person",
                "status": "needs_action",
            }
        ],
        "organizer": {"email": "example@cronofy.com", "display_name": "Example Person"},
        "transparency": "opaque",
        "status": "confirmed",
        "categories": [],
        "recurring": False,
        "event_private": False,
        "options": {"delete": True, "update": True, "change_participation_status": True},
    }
    base.update(over)
    return base


def events_page(
    events: list[dict[str, Any]], next_page: str | None, current: int = 1, total: int = 1
) -> dict[str, Any]:
    pages: dict[str, Any] = {"current": current, "total": total}
    if next_page is not None:
        pages["next_page"] = next_page
    return {"pages": pages, "events": events}


#: a route answering one request
Handler = Callable[[httpx.Request], httpx.Response]


@attrs.define
class FakeCronofy:
    """Answers by ``(method, path)``; records every request. Unrouted calls fail loudly."""

    routes: dict[tuple[str, str], list[httpx.Response] | Handler] = attrs.Factory(dict)
    requests: list[httpx.Request] = attrs.Factory(list)

    def on(self, method: str, path: str, *answers: httpx.Response | Handler) -> None:
        """Answer ``method path`` with a handler, or responses in turn (the last repeats)."""
        if len(answers) == 1 and callable(answers[0]):
            self.routes[(method, path)] = answers[0]
        else:
            self.routes[(method, path)] = [a for a in answers if isinstance(a, httpx.Response)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(599, json={"unrouted": f"{request.method} {request.url.path}"})
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def body(self, i: int = -1) -> Any:
        """The JSON body of the ``i``-th recorded request."""
        return json.loads(self.requests[i].content)


def ok(data: Any = None, status: int = 200, **kw: Any) -> httpx.Response:
    """A response with a JSON body (or none when ``data`` is None)."""
    if data is None:
        return httpx.Response(status, **kw)
    return httpx.Response(status, json=data, **kw)
