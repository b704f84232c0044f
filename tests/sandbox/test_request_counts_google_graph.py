"""The Google and Graph sandboxes count what they answered, as the Cronofy one does
(``GET /_sandbox/requests``: benchmarks read the server's own figures)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from calbridge_google.testing import sandbox_rig as google_rig
from calbridge_outlook.testing import sandbox_rig as graph_rig


async def counts(http: httpx.AsyncClient, root: str, provider: str) -> dict[str, Any]:
    r = await http.get(f"{root}/_sandbox/requests")
    assert r.status_code == 200
    found: dict[str, Any] = r.json()["providers"][provider]
    return found


async def test_google_counts_api_calls_oauth_and_errors() -> None:
    async with google_rig() as rig:
        http = rig.provider.http
        root = rig.base_url.removesuffix("/google")
        connected = await counts(http, root, "google")
        assert connected["requests"] == 2  # the consent redirect and the code exchange
        assert connected["limited"] == 0  # OAuth is not an API call
        assert (await http.delete(f"{root}/_sandbox/requests")).status_code == 204

        token = (await rig.session.access_token()).access_token.reveal()
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{rig.base_url}/calendar/v3/users/me/calendarList"
        for _ in range(3):
            assert (await http.get(url, headers=headers)).status_code == 200
        assert (await http.get(url)).status_code == 401  # no token: answered, not counted
        rig.google.fail_next(403, reason="rateLimitExceeded")
        assert (await http.get(url, headers=headers)).status_code == 403
        await http.post(f"{rig.base_url}/_sandbox/expire-sync-tokens")  # control: not counted

        got = await counts(http, root, "google")
        assert got["requests"] == 5
        assert got["limited"] == 3
        assert got["throttled"] == 0
        assert got["statuses"] == {"200": 3, "401": 1, "403": 1}


async def test_graph_counts_api_calls_and_its_own_throttling() -> None:
    async with graph_rig() as rig:
        root = rig.base_url.removesuffix("/graph")
        token = (await rig.session.access_token()).access_token.reveal()
        headers = {"Authorization": f"Bearer {token}"}
        assert (await rig.http.delete(f"{root}/_sandbox/requests")).status_code == 204

        rig.world.faults.set_latency("graph", 0.2)
        url = f"{rig.base_url}/v1.0/me/calendars"
        answers = await asyncio.gather(*(rig.http.get(url, headers=headers) for _ in range(6)))
        assert sorted(a.status_code for a in answers) == [200] * 4 + [429] * 2
        rig.world.faults.set_latency("graph", 0)
        assert (await rig.http.get(url)).status_code == 401

        got = await counts(rig.http, root, "graph")
        assert got["requests"] == 7
        assert got["limited"] == 6  # Graph counts throttled requests too
        assert got["throttled"] == 2
        assert got["statuses"] == {"200": 4, "401": 1, "429": 2}
