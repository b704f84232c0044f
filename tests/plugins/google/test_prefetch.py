"""Google reads prefetch: the next page's request is on the wire before the page in hand
is handed out (real HTTP over loopback, the shared client's default transport)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from calbridge_google import GoogleProvider
from calbridge_google.sandbox import create_app, google_sandbox
from calbridge_google.testing import sandbox_settings

import calbridge
from calbridge.sandbox import World, build_app, serve_in_thread

START = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)


class Counting:
    """ASGI middleware counting the requests the server has received."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.requests += 1
        await self.app(scope, receive, send)

    def reached(self, n: int, within: float = 3.0) -> int:
        """The count once it reaches ``n`` (or after ``within`` seconds). It blocks this
        thread, so the client's event loop cannot send anything meanwhile: only a request
        already written to the socket can reach the server."""
        deadline = time.monotonic() + within
        while self.requests < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.requests


def _world(events: int) -> tuple[World, str]:
    world = World()
    token = google_sandbox(world).issue_tokens("pre@example.com")["access_token"]
    cal = world.primary_calendar("pre@example.com")
    for i in range(events):
        start = START + dt.timedelta(hours=i)
        world.insert_event(
            cal.id,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary=f"e{i}",
        )
    return world, str(token)


def _session(token: str) -> calbridge.Session:
    return calbridge.Session(
        account=calbridge.Account(
            app_user_id="pre", provider="google", provider_account_id="pre@example.com"
        ),
        tokens=calbridge.StaticTokenSource(tokens=calbridge.TokenSet(access_token=token)),
    )


async def test_the_next_page_is_requested_before_this_one_is_handed_out() -> None:
    world, token = _world(30)
    server_app = Counting(build_app(world, {"google": create_app}))
    window = calbridge.TimeRange(start=START, end=START + dt.timedelta(days=3))
    with serve_in_thread(server_app) as server:
        async with calbridge.make_http_client() as http:
            provider = GoogleProvider(
                http=http, settings=sandbox_settings(f"{server.base_url}/google")
            )
            seen: list[tuple[int, int]] = []  # (events so far, requests the server had)
            ids: list[str] = []
            pages = provider.list_events(_session(token), "primary", window, page_size=10)
            async for page in pages:
                seen.append((len(page), server_app.reached(len(seen) + 2, within=1.0)))
                ids += [e.id for e in page]
            assert len(ids) == len(set(ids)) == 30
            # page 1 is handed out with page 2's request already sent, and so on; the last
            # page comes with no request after it
            assert seen == [(10, 2), (10, 3), (10, 3)]
            # a reader that stops early: the prefetch is cancelled, nothing more is asked
            again = provider.list_events(_session(token), "primary", window, page_size=10)
            first = await anext(aiter(again))
            await again.aclose()  # type: ignore[attr-defined]
            assert len(first) == 10
            assert server_app.reached(6, within=0.3) == 5


async def test_a_sync_read_prefetches_too() -> None:
    world, token = _world(25)
    server_app = Counting(build_app(world, {"google": create_app}))
    with serve_in_thread(server_app) as server:
        async with calbridge.make_http_client() as http:
            provider = GoogleProvider(
                http=http, settings=sandbox_settings(f"{server.base_url}/google")
            )
            seen: list[int] = []
            cursor = None
            async for page in provider.changes(_session(token), "primary", None, page_size=10):
                seen.append(server_app.reached(len(seen) + 2, within=1.0))
                cursor = page.cursor or cursor
            assert seen == [2, 3, 3]
            assert cursor is not None
