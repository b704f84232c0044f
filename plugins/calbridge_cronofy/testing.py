"""Test helpers for code that uses the Cronofy provider.

* Recorded-shape payloads (:func:`token_answer`, :func:`event_json`, :func:`events_page`),
  taken from docs.cronofy.com examples and the official SDKs' fixtures.
* :class:`FakeCronofy`: an ``httpx.MockTransport`` handler answering by method and path
  and recording every request, for unit tests with no network.

* :func:`sandbox_rig`: a connected account on the Cronofy sandbox (loopback or in-process),
  with a ``settle()`` that drives the sandbox clock and the notifications it delivered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs
import httpx

import calbridge

from ._provider import CronofyProvider
from ._push import sign

__all__ = [
    "API",
    "APP",
    "CLIENT_SECRET",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "CronofySandboxRig",
    "FakeCronofy",
    "Handler",
    "event_json",
    "events_page",
    "ok",
    "sandbox_rig",
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


# --------------------------------------------------------------------------- the sandbox rig


@attrs.define
class CronofySandboxRig:
    """A connected Cronofy account on the Cronofy sandbox, for tests and benchmarks.

    Build one with :func:`sandbox_rig`. ``provider`` talks to the sandbox over real
    loopback HTTP or in-process (``httpx.ASGITransport``); notifications the sandbox sends
    are captured in :attr:`deliveries`.
    """

    world: Any
    provider: CronofyProvider
    session: calbridge.Session
    calendar_id: str
    #: the native (world) calendar behind :attr:`calendar_id`
    native_calendar_id: str
    email: str
    callback_url: str
    #: base URL of the server (loopback) or None (in-process)
    server_url: str | None
    deliveries: list[httpx.Request]
    control: httpx.AsyncClient

    def now(self) -> dt.datetime:
        """The sandbox clock's current time."""
        now: dt.datetime = self.world.clock.now()
        return now

    async def settle(self, seconds: float = 5.0) -> None:
        """Advance the sandbox clock so 202 writes, native pushes and deliveries happen."""
        if self.server_url is None:
            await self.world.clock.advance(seconds)
            return
        response = await self.control.post("/_sandbox/clock", json={"seconds": seconds})
        response.raise_for_status()

    async def insert_native_event(
        self, summary: str, start: dt.datetime, minutes: int = 30
    ) -> None:
        """An event the user creates in their own calendar app, behind the app's back."""
        body = {
            "summary": summary,
            "start": {"time": start.isoformat(), "tzid": "UTC"},
            "end": {"time": (start + dt.timedelta(minutes=minutes)).isoformat(), "tzid": "UTC"},
        }
        url = f"/_sandbox/calendars/{urllib.parse.quote(self.native_calendar_id, safe='')}/events"
        response = await self.control.post(url, json=body)
        response.raise_for_status()

    def delivered(self) -> list[calbridge.WebhookRequest]:
        """Every request the sandbox POSTed to the app (notifications, EC callbacks)."""
        return [
            calbridge.WebhookRequest.build(headers=list(r.headers.items()), body=r.content)
            for r in self.deliveries
        ]

    def captured(self, channel_id: str, kind: str | None = None) -> list[calbridge.WebhookRequest]:
        """Notifications the sandbox delivered for ``channel_id`` (optionally of one type)."""
        out = []
        for request in self.deliveries:
            data = json.loads(request.content)
            if data.get("channel", {}).get("channel_id") != channel_id:
                continue
            if kind is not None and data.get("notification", {}).get("type") != kind:
                continue
            out.append(
                calbridge.WebhookRequest.build(
                    headers=list(request.headers.items()), body=request.content
                )
            )
        return out

    async def genuine_notification(self, channel: calbridge.Channel) -> calbridge.WebhookRequest:
        """A real ``change`` notification: a native change the sandbox notices and signs."""
        await self.insert_native_event("changed behind the app's back", self.now() + _DAY)
        await self.settle()
        found = self.captured(channel.id, "change") or self.captured(channel.id)
        if not found:
            raise AssertionError(f"the sandbox delivered nothing for channel {channel.id}")
        return found[-1]

    def forged_notifications(
        self, channel: calbridge.Channel, genuine: calbridge.WebhookRequest
    ) -> list[calbridge.WebhookRequest]:
        """Variants that must be refused: wrong secret, no signature, re-serialised JSON."""
        headers = dict(genuine.headers)
        wrong = {**headers, "cronofy-hmac-sha256": sign(genuine.body, "not the secret")}
        unsigned = {k: v for k, v in headers.items() if k != "cronofy-hmac-sha256"}
        reserialised = json.dumps(json.loads(genuine.body), indent=2).encode()
        return [
            attrs.evolve(genuine, headers=wrong),
            attrs.evolve(genuine, headers=unsigned),
            attrs.evolve(genuine, body=reserialised),
        ]


_DAY = dt.timedelta(days=1)
SANDBOX_CLIENT_ID = "calbridge-test"
SANDBOX_CLIENT_SECRET = "calbridge-test-secret"  # noqa: S105 - the sandbox's own test secret


@contextlib.asynccontextmanager
async def sandbox_rig(
    *,
    loopback: bool,
    email: str = "alice@example.com",
    page_size: int | None = None,
    sandbox_rate_limits: tuple[tuple[int, float], ...] | None = None,
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[CronofySandboxRig]:
    """A sandbox world (manual clock) with ``email`` connected through the real OAuth flow.

    Args:
        loopback: serve the sandbox with uvicorn on 127.0.0.1 (real HTTP, notifications
            POSTed to a loopback receiver); otherwise in-process through ASGITransport.
        page_size: the sandbox's Read Events page size.
        sandbox_rate_limits: the sandbox's per-application limits (``()`` disables them).
        options: extra provider options.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from calbridge.sandbox import World, build_app, serve_in_thread

    from .sandbox import create_app

    deliveries: list[httpx.Request] = []

    def capture(request: httpx.Request) -> httpx.Response:
        request.read()
        deliveries.append(request)
        return httpx.Response(200)

    async def receiver(request: Request) -> Response:
        body = await request.body()
        deliveries.append(
            httpx.Request("POST", str(request.url), headers=request.headers.raw, content=body)
        )
        return Response(status_code=200)

    world = World(transport=None if loopback else httpx.MockTransport(capture))
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    build_app(world, {"cronofy": create_app}, control=False)  # creates the engine
    settings = world.views["cronofy"].settings
    if page_size is not None:
        settings.page_size = page_size
    if sandbox_rate_limits is not None:
        settings.rate_limits = sandbox_rate_limits
    app = build_app(world, {"cronofy": create_app})  # the app reads the settings

    async with contextlib.AsyncExitStack() as stack:
        if loopback:
            server = stack.enter_context(serve_in_thread(app))
            hooks = stack.enter_context(
                serve_in_thread(Starlette(routes=[Route("/hooks", receiver, methods=["POST"])]))
            )
            base, callback = server.base_url, f"{hooks.base_url}/hooks"
            http = calbridge.make_http_client()
            control = httpx.AsyncClient(base_url=base)
        else:
            base, callback = "http://cronofy.sandbox", "https://app.example.test/hooks"
            transport = httpx.ASGITransport(app=app)
            http = calbridge.make_http_client(transport=transport)
            control = httpx.AsyncClient(transport=transport, base_url=base)
        await stack.enter_async_context(http)
        await stack.enter_async_context(control)
        provider = CronofyProvider(
            http=http,
            settings=calbridge.ProviderSettings(
                client_id=SANDBOX_CLIENT_ID,
                client_secret=SANDBOX_CLIENT_SECRET,
                base_urls={"api": f"{base}/cronofy", "app": f"{base}/cronofy"},
                options={"clock": world.clock.now, **(options or {})},
            ),
        )
        redirect = "https://app.example.test/oauth/callback"
        url = provider.authorization_url(
            calbridge.AuthorizationRequest(redirect_uri=redirect, state="st", login_hint=email)
        )
        answer = await http.get(url)
        location = urllib.parse.urlsplit(answer.headers["location"])
        code = dict(urllib.parse.parse_qsl(location.query))["code"]
        grant = await provider.exchange_code(code=code, redirect_uri=redirect)
        session = calbridge.Session(
            account=calbridge.Account(
                app_user_id=email,
                provider="cronofy",
                provider_account_id=grant.provider_account_id,
                email=email,
                id=f"acct-{email}",
            ),
            tokens=calbridge.StaticTokenSource(
                tokens=grant.tokens, refresher=provider.refresh_tokens
            ),
        )
        calendars = await provider.list_calendars(session)
        primary = next(c for c in calendars if c.primary)
        yield CronofySandboxRig(
            world=world,
            provider=provider,
            session=session,
            calendar_id=primary.id,
            native_calendar_id=world.primary_calendar(email).id,
            email=email,
            callback_url=callback,
            server_url=base if loopback else None,
            deliveries=deliveries,
            control=control,
        )
