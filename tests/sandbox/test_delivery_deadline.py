"""The webhook answer deadline holds for in-process receivers (httpx.ASGITransport) too.

httpx does not time out an ASGI transport, so before the deadline was enforced by the
deliverer itself a slow in-process receiver counted as a success however late it answered.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
from calbridge_cronofy.sandbox import create_app

from calbridge.sandbox import World, build_app

from .conftest import BASE, Receiver, bearer, connect, make_world

T0 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)  # the manual clock's start
DEADLINE = 0.2  # seconds: small, so the tests stay fast


def in_process(receiver: Receiver, deadline: float = DEADLINE) -> World:
    return make_world(delivery_timeout=deadline, transport=httpx.ASGITransport(app=receiver.app()))


async def test_a_slow_in_process_receiver_counts_as_a_timeout() -> None:
    receiver = Receiver(delay=5.0)
    world = in_process(receiver)
    world.delivery.deliver("cronofy", "http://hooks/hook", b"{}", {})
    started = time.monotonic()
    await world.clock.advance(0)
    took = time.monotonic() - started
    assert took < 2.0  # cut off at the deadline, not after the receiver's 5 s
    [attempt] = world.delivery.attempts
    assert (attempt.ok, attempt.status, attempt.error, attempt.final) == (
        False,
        None,
        "timeout",
        False,
    )
    assert len(receiver.received) == 1  # the receiver did get the request
    assert [t.when for t in world.clock.pending()] == [T0 + dt.timedelta(seconds=30)]
    receiver.delay = 0.0  # the retry is answered at once
    await world.clock.advance(30)
    assert [(a.attempt, a.ok, a.status) for a in world.delivery.attempts] == [
        (1, False, None),
        (2, True, 200),
    ]


async def test_an_in_process_answer_within_the_deadline_is_a_success() -> None:
    receiver = Receiver(delay=DEADLINE / 4)
    world = in_process(receiver)
    world.delivery.deliver("cronofy", "http://hooks/hook", b"{}", {})
    await world.clock.advance(0)
    [attempt] = world.delivery.attempts
    assert (attempt.ok, attempt.status, attempt.error, attempt.final) == (True, 200, None, True)
    assert world.clock.pending() == []


async def test_cronofy_verification_to_a_slow_in_process_receiver_is_retried() -> None:
    """Through the Cronofy sandbox: the channel's verification misses the deadline."""
    receiver = Receiver(delay=5.0)
    world = in_process(receiver)
    app = build_app(world, {"cronofy": create_app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
        token = await connect(http)
        r = await http.post(
            "/cronofy/v1/channels",
            json={"callback_url": "http://hooks/hook"},
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
        await world.clock.advance(0)
        [attempt] = world.delivery.attempts
        assert (attempt.ok, attempt.error) == (False, "timeout")
        assert json.loads(attempt.body)["notification"] == {"type": "verification"}
        receiver.delay = 0.0
        await world.clock.advance(30)
        assert [a.ok for a in world.delivery.attempts] == [False, True]
        assert [json.loads(r.body)["notification"]["type"] for r in receiver.received] == [
            "verification",
            "verification",
        ]
