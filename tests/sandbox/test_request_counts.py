"""The sandbox counts what it answered: ``GET /_sandbox/requests`` (benchmarks read it)."""

from __future__ import annotations

from typing import Any

import httpx
from calbridge_cronofy.sandbox import engine_for

from calbridge.sandbox import World

from .conftest import bearer, connect


async def counts(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.get("/_sandbox/requests")
    assert r.status_code == 200
    found: dict[str, Any] = r.json()["providers"]["cronofy"]
    return found


async def test_requests_and_429s_are_counted(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)  # an authorize and a token call: answered, not rate limited
    before = await counts(http)
    assert before["requests"] == 2
    assert before["limited"] == 0
    engine_for(world).settings.rate_limits = ((5, 60.0),)
    for _ in range(7):
        await http.get("/cronofy/v1/calendars", headers=bearer(token))
    world.faults.fail_next("cronofy", 429, retry_after=1)  # injected: not the rate limiter's
    await http.get("/cronofy/v1/calendars", headers=bearer(token))
    await http.get("/cronofy/v1/calendars")  # no token: 401, not counted against the limit

    got = await counts(http)
    assert got["requests"] == 2 + 7 + 1 + 1
    assert got["limited"] == 7
    assert got["throttled"] == 2
    # the token answer, 5 reads; the authorize redirect; the 401; 2 throttled and 1 injected
    assert got["statuses"] == {"200": 6, "302": 1, "401": 1, "429": 3}

    assert (await http.delete("/_sandbox/requests")).status_code == 204
    reset = await counts(http)
    assert (reset["requests"], reset["limited"], reset["throttled"]) == (0, 0, 0)
    await http.get("/cronofy/v1/calendars", headers=bearer(token))
    assert (await counts(http))["throttled"] == 1  # the window itself was not reset
