"""When the Cronofy sandbox closes a notification channel on its own.

A channel is closed only when no notification to it has succeeded for
``channel_failure_window`` seconds (24 h by default): not when one notification's own
retries ran out while others were delivered.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
from calbridge_cronofy.sandbox import create_app, engine_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calbridge import EventTime
from calbridge.sandbox import World, build_app

from .conftest import BASE, bearer, connect, make_world

T0 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)  # the manual clock's start
HOUR = 3600.0


@attrs.define
class SelectiveReceiver:
    """Answers 500 to the notification types in ``failing`` (``"*"``: every type), else 200."""

    failing: set[str] = attrs.field(factory=set)
    answered: list[tuple[dt.datetime, str, int]] = attrs.field(factory=list)
    world: World | None = None

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            kind = json.loads(await request.body())["notification"]["type"]
            status = 500 if "*" in self.failing or kind in self.failing else 200
            assert self.world is not None
            self.answered.append((self.world.clock.now(), kind, status))
            return Response(status_code=status)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def hooks() -> SelectiveReceiver:
    return SelectiveReceiver()


@pytest.fixture
def world(hooks: SelectiveReceiver) -> World:
    w = make_world(transport=httpx.ASGITransport(app=hooks.app()))
    hooks.world = w
    engine_for(w).settings.access_token_ttl = 30 * 86400  # days pass in these tests
    return w


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(world, {"cronofy": create_app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def open_channel(http: httpx.AsyncClient, token: dict[str, Any]) -> str:
    r = await http.post(
        "/cronofy/v1/channels", json={"callback_url": "http://hooks/hook"}, headers=bearer(token)
    )
    assert r.status_code == 200, r.text
    channel_id: str = r.json()["channel"]["channel_id"]
    return channel_id


async def listed(http: httpx.AsyncClient, token: dict[str, Any]) -> list[str]:
    r = await http.get("/cronofy/v1/channels", headers=bearer(token))
    assert r.status_code == 200
    return [c["channel_id"] for c in r.json()["channels"]]


def native_change(world: World, summary: str) -> None:
    """The user adds an event in their own calendar (Cronofy learns of it 2 s later)."""
    cal = world.primary_calendar("alice@example.com").id
    start = world.clock.now() + dt.timedelta(days=1)
    world.insert_event(
        cal,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary=summary,
    )


async def advance_to(world: World, seconds: float) -> None:
    """Move the clock to ``T0 + seconds``."""
    await world.clock.advance(
        (T0 + dt.timedelta(seconds=seconds) - world.clock.now()).total_seconds()
    )


async def test_one_notification_failing_for_24_hours_does_not_close_a_channel_others_reach(
    http: httpx.AsyncClient, world: World, hooks: SelectiveReceiver
) -> None:
    hooks.failing = {"verification"}  # the receiver rejects this one kind only
    token = await connect(http)
    channel_id = await open_channel(http, token)
    for hour in range(1, 26, 6):  # changes at 1 h, 7 h, 13 h, 19 h, 25 h: all delivered
        await world.clock.advance(hour * HOUR - (world.clock.now() - T0).total_seconds())
        native_change(world, f"change at {hour} h")
    await world.clock.advance(HOUR)
    verifications = [
        a
        for a in world.delivery.attempts
        if json.loads(a.body)["notification"]["type"] == "verification"
    ]
    assert all(not a.ok for a in verifications)
    assert verifications[-1].final  # its own 24 hours of retries ran out...
    assert verifications[-1].at == T0 + dt.timedelta(hours=24)
    assert await listed(http, token) == [channel_id]  # ...but the channel stays open
    changes = [(at, status) for at, kind, status in hooks.answered if kind == "change"]
    assert [status for _, status in changes] == [200] * 5
    assert changes[-1][0] > T0 + dt.timedelta(hours=25)


async def test_a_channel_no_notification_reaches_is_closed_after_the_window(
    http: httpx.AsyncClient, world: World, hooks: SelectiveReceiver
) -> None:
    engine_for(world).settings.channel_failure_window = 600.0  # configurable: 10 minutes
    hooks.failing = {"*"}
    token = await connect(http)
    channel_id = await open_channel(http, token)
    await advance_to(world, 599)
    assert await listed(http, token) == [channel_id]
    await advance_to(world, 600)  # the verification's last try, 600 s after the first
    assert await listed(http, token) == []
    attempts = [(a.at - T0).total_seconds() for a in world.delivery.attempts]
    assert attempts == [0, 30, 90, 210, 450, 600]
    native_change(world, "after closing")
    await world.clock.advance(HOUR)
    assert len(world.delivery.attempts) == 6  # a closed channel is not notified


async def test_a_success_restarts_the_window(
    http: httpx.AsyncClient, world: World, hooks: SelectiveReceiver
) -> None:
    engine_for(world).settings.channel_failure_window = 600.0
    hooks.failing = {"*"}
    token = await connect(http)
    channel_id = await open_channel(http, token)  # the verification fails from 0 to 600 s
    await advance_to(world, 460)
    hooks.failing = set()
    native_change(world, "delivered")  # its change notification succeeds at 462 s
    await advance_to(world, 470)
    hooks.failing = {"*"}
    await advance_to(world, 600)  # the verification gives up; no success for 138 s only
    assert world.delivery.attempts[-1].final
    assert await listed(http, token) == [channel_id]
    await advance_to(world, 700)
    native_change(world, "failing")  # notified at 702 s, retried until 1302 s
    await advance_to(world, 1199)
    assert await listed(http, token) == [channel_id]  # failing since 600 s: 599 s
    await advance_to(world, 1302)
    assert await listed(http, token) == []
    answered = [
        (round((at - T0).total_seconds()), kind, status) for at, kind, status in hooks.answered
    ]
    assert (462, "change", 200) in answered
    assert answered[-1] == (1302, "change", 500)
