"""Test helpers for code that uses the Google provider.

:func:`sandbox_rig` connects an account on the Google sandbox (over real loopback HTTP or
in-process through ``httpx.ASGITransport``) through the provider's own OAuth flow, and
captures every webhook the sandbox delivers, so tests can verify genuine notifications.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
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

from ._provider import GoogleProvider
from .sandbox import create_app, google_sandbox
from .sandbox._app import GoogleSandbox

__all__ = [
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "GoogleSandboxRig",
    "HookCapture",
    "sandbox_rig",
    "sandbox_settings",
]

SANDBOX_CLIENT_ID = "calbridge-google-tests.apps.googleusercontent.com"
SANDBOX_CLIENT_SECRET = "GOCSPX-sandbox-secret"  # noqa: S105 - a sandbox-only value
REDIRECT_URI = "https://app.example.test/oauth/google"
CALLBACK_URL = "https://app.example.test/calbridge/hooks/google"


@attrs.define
class HookCapture:
    """An ``httpx.MockTransport`` receiver that records every delivered webhook."""

    received: list[httpx.Request] = attrs.field(factory=list)
    status: int = 200
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self._lock:
            self.received.append(request)
        return httpx.Response(self.status)

    def for_channel(self, channel_id: str) -> list[httpx.Request]:
        """Deliveries of one channel, in order."""
        with self._lock:
            return [r for r in self.received if r.headers.get("x-goog-channel-id") == channel_id]

    @staticmethod
    def as_webhook(request: httpx.Request) -> WebhookRequest:
        """A delivered request as the webhook receiver would see it."""
        return WebhookRequest.build(headers=list(request.headers.items()), body=request.content)


def sandbox_settings(base_url: str, **options: Any) -> ProviderSettings:
    """Provider settings pointing every Google host at a sandbox ``.../google`` base URL."""
    return ProviderSettings(
        client_id=SANDBOX_CLIENT_ID,
        client_secret=SANDBOX_CLIENT_SECRET,
        base_urls={"api": base_url, "accounts": base_url, "oauth2": base_url},
        options=options,
    )


@attrs.define
class GoogleSandboxRig:
    """A world, the Google sandbox, and a provider with one connected account."""

    world: World
    provider: GoogleProvider
    session: Session
    email: str
    calendar_id: str
    base_url: str
    hooks: HookCapture
    callback_url: str = CALLBACK_URL

    @property
    def google(self) -> GoogleSandbox:
        """The world's Google view (controls: expire_sync_tokens, fail_next ...)."""
        return google_sandbox(self.world)

    def now(self) -> dt.datetime:
        """The sandbox clock."""
        return self.world.clock.now()

    async def settle(self) -> None:
        """Run due sandbox timers (webhook deliveries) without moving time."""
        await self.world.clock.run_due()

    async def genuine_notification(self, channel: Channel) -> WebhookRequest:
        """Change the watched calendar behind the app's back; the delivered ``exists``."""
        start = self.now() + dt.timedelta(days=3)
        self.world.insert_event(
            channel.calendar_ids[0] if channel.calendar_ids else self.calendar_id,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary="native change",
        )
        await self.settle()
        delivered = [
            r
            for r in self.hooks.for_channel(channel.id)
            if r.headers.get("x-goog-resource-state") == "exists"
        ]
        assert delivered, "the sandbox delivered no exists notification"
        return self.hooks.as_webhook(delivered[-1])

    def forged_notifications(
        self, channel: Channel, genuine: WebhookRequest
    ) -> Sequence[WebhookRequest]:
        """Variants of a genuine notification that must be rejected."""
        h = dict(genuine.headers)
        variants = [
            {**h, "x-goog-channel-token": "forged"},
            {k: v for k, v in h.items() if k != "x-goog-channel-token"},
            {**h, "x-goog-resource-id": "someone-elses-resource"},
            {**h, "x-goog-channel-id": "unknown-channel"},
        ]
        return [attrs.evolve(genuine, headers=v) for v in variants]


@contextlib.asynccontextmanager
async def sandbox_rig(
    *,
    loopback: bool = False,
    email: str = "alice@example.com",
    world: World | None = None,
    page_size: int = 250,
    sandboxes: dict[str, Any] | None = None,
) -> AsyncIterator[GoogleSandboxRig]:
    """A connected Google account on the sandbox (the OAuth flow runs for real).

    Args:
        loopback: serve the sandbox with uvicorn on 127.0.0.1 (else in-process).
        world: an existing world (default: a new one with a manual clock whose webhook
            deliveries are captured in ``rig.hooks``).
        sandboxes: the provider sandboxes to serve (default: only Google).
    """
    hooks = HookCapture()
    if world is None:
        world = World(transport=httpx.MockTransport(hooks))
    world.add_application(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET)
    google_sandbox(world)
    app = build_app(world, sandboxes or {"google": create_app})
    async with contextlib.AsyncExitStack() as stack:
        if loopback:
            server = stack.enter_context(serve_in_thread(app))
            base = f"{server.base_url}/google"
            http = await stack.enter_async_context(httpx.AsyncClient())
        else:
            base = "http://sandbox.test/google"
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
            )
        provider = GoogleProvider(http=http, settings=sandbox_settings(base, page_size=page_size))
        provider.clock = world.clock.timestamp  # channel expirations in sandbox time
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
        code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
        grant = await provider.exchange_code(
            code=code, redirect_uri=REDIRECT_URI, code_verifier=verifier
        )
        session = Session(
            account=Account(
                app_user_id=email,
                provider="google",
                provider_account_id=grant.provider_account_id,
                email=grant.email,
                id=f"acct-{email}",
            ),
            tokens=StaticTokenSource(grant.tokens, provider.refresh_tokens),
        )
        yield GoogleSandboxRig(
            world=world,
            provider=provider,
            session=session,
            email=email,
            calendar_id=world.primary_calendar(email).id,
            base_url=base,
            hooks=hooks,
        )
