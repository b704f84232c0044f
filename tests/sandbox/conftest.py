"""Fixtures for the sandbox tests: a world, the Cronofy sandbox in-process, webhook receivers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import attrs
import httpx
import pytest
from calbridge_cronofy.sandbox import create_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread

CLIENT_ID = "cats"
CLIENT_SECRET = "opposable thumbs"  # pycronofy's own test secret
REDIRECT = "http://app.example/callback"
BASE = "http://sandbox.test"


@attrs.define
class Received:
    """One notification a receiver got."""

    headers: dict[str, str]
    body: bytes


@attrs.define
class Receiver:
    """A webhook receiver recording raw bodies; answers ``status`` after ``delay`` seconds."""

    received: list[Received] = attrs.field(factory=list)
    status: int = 200
    delay: float = 0.0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.received.append(Received(dict(request.headers), body))
            if self.delay:
                await asyncio.sleep(self.delay)
            return Response(status_code=self.status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


def make_world(**kwargs: Any) -> World:
    world = World(**kwargs)
    world.add_application(CLIENT_ID, CLIENT_SECRET)
    return world


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def world(receiver: Receiver) -> World:
    """A manual-clock world delivering webhooks in-process to ``receiver`` (``http://hooks``)."""
    return make_world(transport=httpx.ASGITransport(app=receiver.app()))


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of ``build_app(world)`` (Cronofy under ``/cronofy``)."""
    app = build_app(world, {"cronofy": create_app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def connect(
    http: httpx.AsyncClient,
    email: str = "alice@example.com",
    scope: str = "read_events create_event delete_event create_calendar",
    **extra: str,
) -> dict[str, Any]:
    """Authorize ``email`` through the sandbox; the token response JSON."""
    r = await http.get(
        "/cronofy/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": scope,
            "state": "st",
            "login_hint": email,
            **extra,
        },
    )
    assert r.status_code == 302
    code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    assert r.status_code == 200, r.text
    token: dict[str, Any] = r.json()
    return token


def bearer(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}


@pytest.fixture
def loopback_receiver() -> Iterator[tuple[Receiver, LoopbackServer]]:
    """A receiver served over real HTTP on loopback (``server.base_url + "/hook"``)."""
    rec = Receiver()
    with serve_in_thread(rec.app()) as server:
        yield rec, server
