"""Test helpers for code that uses the Outlook provider.

:func:`sandbox_rig` connects a Microsoft-native account on the Graph sandbox (over real
loopback HTTP or in-process through ``httpx.ASGITransport``) through the provider's own
OAuth flow. Webhooks the sandbox sends go to a :class:`HookCapture`, which answers Graph's
validation handshake (200 ``text/plain`` echo) and records every notification.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import secrets
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx

from calbridge import (
    Account,
    AuthorizationRequest,
    Channel,
    EventTime,
    ProviderSettings,
    Session,
    StaticTokenSource,
    WebhookRequest,
)
from calbridge.sandbox import World, build_app, serve_in_thread

from ._provider import OutlookProvider
from .sandbox import create_app

__all__ = [
    "CALLBACK_URL",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "HookCapture",
    "OutlookSandboxRig",
    "sandbox_rig",
    "sandbox_settings",
]

SANDBOX_CLIENT_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
SANDBOX_CLIENT_SECRET = "sandbox~graph~secret"  # noqa: S105 - a sandbox-only value
REDIRECT_URI = "https://app.example.test/oauth/outlook"
CALLBACK_URL = "https://app.example.test/calbridge/hooks/outlook"


@attrs.define
class HookCapture:
    """A webhook receiver (an ``httpx.MockTransport`` handler) for the sandbox's POSTs.

    Validation requests are echoed (or refused when ``echo`` is False); every other
    request is recorded and answered ``status``.
    """

    received: list[httpx.Request] = attrs.field(factory=list)
    validations: list[str] = attrs.field(factory=list)
    status: int = 202
    echo: bool = True
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        token = request.url.params.get("validationToken")
        if token is not None:
            with self._lock:
                self.validations.append(token)
            if not self.echo:
                return httpx.Response(200, text="nope")
            return httpx.Response(200, text=token, headers={"Content-Type": "text/plain"})
        with self._lock:
            self.received.append(request)
        return httpx.Response(self.status)

    def items(self, subscription_id: str | None = None) -> list[dict[str, Any]]:
        """Every delivered notification item (of one subscription), in order."""
        out: list[dict[str, Any]] = []
        with self._lock:
            received = list(self.received)
        for request in received:
            for item in json.loads(request.content).get("value", []):
                if subscription_id is None or item.get("subscriptionId") == subscription_id:
                    out.append(item)
        return out

    def for_subscription(self, subscription_id: str) -> list[httpx.Request]:
        """Deliveries that carry an item of one subscription."""
        with self._lock:
            received = list(self.received)
        return [
            r
            for r in received
            if any(
                i.get("subscriptionId") == subscription_id
                for i in json.loads(r.content).get("value", [])
            )
        ]

    @staticmethod
    def as_webhook(request: httpx.Request) -> WebhookRequest:
        """A delivered request as the webhook receiver would see it."""
        return WebhookRequest.build(
            headers=list(request.headers.items()),
            body=request.content,
            query=dict(request.url.params),
        )


def sandbox_settings(base_url: str, **options: Any) -> ProviderSettings:
    """Provider settings pointing Graph and the login host at a sandbox ``.../graph`` URL."""
    return ProviderSettings(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        base_urls={"graph": base_url, "login": base_url},
        options=options,
    )


@attrs.define
class OutlookSandboxRig:
    """A world, the Graph sandbox, and a provider with one connected account."""

    world: World
    provider: OutlookProvider
    session: Session
    email: str
    calendar_id: str
    base_url: str
    hooks: HookCapture
    http: httpx.AsyncClient
    callback_url: str = CALLBACK_URL

    def now(self) -> dt.datetime:
        """The sandbox clock."""
        return self.world.clock.now()

    async def settle(self) -> None:
        """Run due sandbox timers (webhook deliveries) without moving time."""
        await self.world.clock.run_due()

    async def genuine_notification(self, channel: Channel) -> WebhookRequest:
        """Change the watched calendar behind the app's back; the delivered notification."""
        start = self.now() + dt.timedelta(days=3)
        self.world.insert_event(
            channel.calendar_ids[0] if channel.calendar_ids else self.calendar_id,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary="native change",
        )
        await self.settle()
        delivered = self.hooks.for_subscription(channel.id)
        assert delivered, "the sandbox delivered no notification"
        return self.hooks.as_webhook(delivered[-1])

    def forged_notifications(
        self, channel: Channel, genuine: WebhookRequest
    ) -> Sequence[WebhookRequest]:
        """Variants of a genuine notification that must be rejected."""
        payload = json.loads(genuine.body)

        def variant(**changes: Any) -> WebhookRequest:
            items = [
                {k: v for k, v in {**item, **changes}.items() if v is not None}
                for item in payload["value"]
            ]
            return attrs.evolve(genuine, body=json.dumps({"value": items}).encode())

        return [
            variant(clientState="forged"),
            variant(clientState=None),
            variant(subscriptionId="00000000-0000-0000-0000-000000000000"),
            variant(clientState=str(payload["value"][0]["clientState"]) + "x"),
        ]


@contextlib.asynccontextmanager
async def sandbox_rig(
    *,
    loopback: bool = False,
    email: str = "alice@contoso.example",
    world: World | None = None,
    page_size: int = 50,
    sandboxes: dict[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[OutlookSandboxRig]:
    """A connected Microsoft-native account on the Graph sandbox (real OAuth flow).

    Args:
        loopback: serve the sandbox with uvicorn on 127.0.0.1 (else in-process).
        world: an existing world (default: a new one with a manual clock whose webhook
            deliveries go to ``rig.hooks``).
        sandboxes: the provider sandboxes to serve (default: only Graph).
        options: more provider options.
    """
    hooks = HookCapture()
    if world is None:
        world = World(transport=httpx.MockTransport(hooks))
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    app = build_app(world, sandboxes or {"graph": create_app})
    async with contextlib.AsyncExitStack() as stack:
        if loopback:
            server = stack.enter_context(serve_in_thread(app))
            base = f"{server.base_url}/graph"
            http = await stack.enter_async_context(httpx.AsyncClient())
        else:
            base = "http://sandbox.test/graph"
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
            )
        provider = OutlookProvider(
            http=http, settings=sandbox_settings(base, page_size=page_size, **options)
        )
        provider.clock = world.clock.timestamp
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        url = provider.authorization_url(
            AuthorizationRequest(
                redirect_uri=REDIRECT_URI,
                state="rig",
                login_hint=email,
                code_challenge=challenge.decode().rstrip("="),
            )
        )
        consent = await http.get(url)
        assert consent.status_code == 302, consent.text
        query = parse_qs(urlsplit(consent.headers["location"]).query)
        assert query["state"] == ["rig"]
        grant = await provider.exchange_code(
            code=query["code"][0], redirect_uri=REDIRECT_URI, code_verifier=verifier
        )
        session = Session(
            account=Account(
                app_user_id=email,
                provider="outlook",
                provider_account_id=grant.provider_account_id,
                email=grant.email,
                id=f"acct-{email}",
            ),
            tokens=StaticTokenSource(grant.tokens, provider.refresh_tokens),
        )
        yield OutlookSandboxRig(
            world=world,
            provider=provider,
            session=session,
            email=email,
            calendar_id=world.primary_calendar(email).id,
            base_url=base,
            hooks=hooks,
            http=http,
        )
