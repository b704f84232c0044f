"""Channel filters of the Cronofy sandbox: validated, echoed, and enforced on notifications."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
from calbridge_cronofy.sandbox import create_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calbridge import EventTime
from calbridge.sandbox import World, build_app

from .conftest import BASE, bearer, connect, make_world
from .test_cronofy_noop_upsert import connect_other_app

T0 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)  # the manual clock's start
EMAIL = "alice@example.com"


def at(hours: float) -> EventTime:
    return EventTime.zoned(T0 + dt.timedelta(hours=hours), "UTC")


@attrs.define
class Hooks:
    """Records which callback path (``http://hooks/<name>``) got which notification."""

    got: list[tuple[str, dict[str, Any]]] = attrs.field(factory=list)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            self.got.append((request.path_params["name"], json.loads(await request.body())))
            return Response(status_code=200)

        return Starlette(routes=[Route("/{name}", hook, methods=["POST"])])

    def changes(self) -> list[str]:
        """Callback names that got a ``change``, in order."""
        return [name for name, n in self.got if n["notification"]["type"] == "change"]

    def clear(self) -> None:
        self.got.clear()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def world(hooks: Hooks) -> World:
    return make_world(transport=httpx.ASGITransport(app=hooks.app()))


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(world, {"cronofy": create_app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def create_channel(
    http: httpx.AsyncClient, token: dict[str, Any], name: str, filters: Any = None
) -> httpx.Response:
    body: dict[str, Any] = {"callback_url": f"http://hooks/{name}"}
    if filters is not None:
        body["filters"] = filters
    return await http.post("/cronofy/v1/channels", json=body, headers=bearer(token))


async def channel(
    http: httpx.AsyncClient, token: dict[str, Any], name: str, filters: Any = None
) -> dict[str, Any]:
    r = await create_channel(http, token, name, filters)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()["channel"]
    return out


async def calendar_ids(http: httpx.AsyncClient, token: dict[str, Any]) -> dict[str, str]:
    """Calendar name -> Cronofy calendar id."""
    r = await http.get("/cronofy/v1/calendars", headers=bearer(token))
    assert r.status_code == 200
    return {c["calendar_name"]: c["calendar_id"] for c in r.json()["calendars"]}


async def test_filters_are_validated(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    bob = await connect(http, email="bob@example.com")
    [bobs_calendar] = (await calendar_ids(http, bob)).values()
    [own] = (await calendar_ids(http, token)).values()
    invalid: list[Any] = [
        {"calendar_ids": []},
        {"calendar_ids": ["cal_unknown"]},
        {"calendar_ids": [own, bobs_calendar]},  # someone else's calendar
        {"calendar_ids": own},  # not a list
        {"calendar_ids": [own, 7]},
        {"calendar_ids": None},
        {"only_managed": "sometimes"},
        {"only_managed": 1},
        ["calendar_ids"],
    ]
    for filters in invalid:
        r = await create_channel(http, token, "x", filters)
        assert r.status_code == 422, filters
        [(field, [error])] = r.json()["errors"].items()
        assert field == "filters"
        assert set(error) == {"key", "description"}
    r = await http.get("/cronofy/v1/channels", headers=bearer(token))
    assert r.json()["channels"] == []  # nothing was created


async def test_only_non_default_filters_are_echoed(
    http: httpx.AsyncClient, world: World, hooks: Hooks
) -> None:
    token = await connect(http)
    [cid] = (await calendar_ids(http, token)).values()
    assert (await channel(http, token, "none"))["filters"] == {}
    assert (await channel(http, token, "empty", {}))["filters"] == {}
    defaults = await channel(http, token, "defaults", {"only_managed": False})
    assert defaults["filters"] == {}
    assert (await channel(http, token, "cal", {"calendar_ids": [cid]}))["filters"] == {
        "calendar_ids": [cid]
    }
    assert (await channel(http, token, "managed", {"only_managed": True}))["filters"] == {
        "only_managed": True
    }
    both = await channel(http, token, "both", {"calendar_ids": [cid], "only_managed": "true"})
    assert both["filters"] == {"calendar_ids": [cid], "only_managed": True}
    listed = (await http.get("/cronofy/v1/channels", headers=bearer(token))).json()["channels"]
    assert {c["callback_url"][len("http://hooks/") :]: c["filters"] for c in listed} == {
        "none": {},
        "empty": {},
        "defaults": {},
        "cal": {"calendar_ids": [cid]},
        "managed": {"only_managed": True},
        "both": {"calendar_ids": [cid], "only_managed": True},
    }
    # the same filters again: the existing channel
    assert (await channel(http, token, "cal", {"calendar_ids": [cid]}))["channel_id"] == next(
        c["channel_id"] for c in listed if c["callback_url"] == "http://hooks/cal"
    )
    # notifications carry the channel with its filters
    await world.clock.advance(0)
    sent = {name: n["channel"] for name, n in hooks.got}
    assert sent["both"] == both


async def test_calendar_ids_filter_limits_change_notifications(
    http: httpx.AsyncClient, world: World, hooks: Hooks
) -> None:
    token = await connect(http)
    work = world.add_calendar(EMAIL, "Work")
    ids = await calendar_ids(http, token)
    primary_id, work_id = ids[EMAIL], ids["Work"]
    await channel(http, token, "primary", {"calendar_ids": [primary_id]})
    await channel(http, token, "work", {"calendar_ids": [work_id]})
    await channel(http, token, "all")
    await channel(http, token, "both", {"calendar_ids": [work_id, primary_id]})
    await world.clock.advance(0)
    hooks.clear()

    world.insert_event(work.id, start=at(2), end=at(3), summary="Work thing")
    await world.clock.advance(5)
    assert sorted(hooks.changes()) == ["all", "both", "work"]
    hooks.clear()
    world.insert_event(world.primary_calendar(EMAIL).id, start=at(4), end=at(5), summary="Home")
    await world.clock.advance(5)
    assert sorted(hooks.changes()) == ["all", "both", "primary"]


async def test_only_managed_channels_hear_of_changes_to_the_apps_own_events(
    http: httpx.AsyncClient, world: World, hooks: Hooks
) -> None:
    token = await connect(http)
    other = await connect_other_app(http, world)
    [cid] = (await calendar_ids(http, token)).values()
    cal = world.primary_calendar(EMAIL).id
    await channel(http, token, "managed", {"only_managed": True})
    await channel(http, token, "all")
    url = f"/cronofy/v1/calendars/{cid}/events"
    single = {"event_id": "one", "summary": "Mine", "start": "2026-01-06T10:00:00Z"}
    single["end"] = "2026-01-06T11:00:00Z"
    series = {
        "event_id": "daily",
        "summary": "Our standup",
        "start": "2026-01-07T09:00:00Z",
        "end": "2026-01-07T09:15:00Z",
        "recurrence": {"rules": [{"frequency": "daily", "count": 3}]},
    }
    for body in (single, series):
        assert (await http.post(url, json=body, headers=bearer(token))).status_code == 202
    await world.clock.advance(5)
    assert hooks.changes() == []  # the app's own writes notify none of its channels
    mine = next(e for e in world.events(cal) if e.summary == "Mine")
    master = next(e for e in world.events(cal) if e.summary == "Our standup")

    # a change the user makes to an unrelated event: only the unfiltered channel
    world.insert_event(cal, start=at(3), end=at(4), summary="Not the app's")
    await world.clock.advance(5)
    assert hooks.changes() == ["all"]
    hooks.clear()

    # the user edits the app's event in their own calendar: both
    world.update_event(cal, mine.id, summary="Mine, renamed by the user")
    await world.clock.advance(5)
    assert sorted(hooks.changes()) == ["all", "managed"]
    hooks.clear()

    # the user moves one occurrence of the app's series (a new native exception): both
    second = EventTime.zoned(dt.datetime(2026, 1, 8, 9, tzinfo=dt.UTC), "UTC")
    world.insert_event(
        cal,
        start=at(3 * 24 + 2),
        end=at(3 * 24 + 2.25),
        summary="Our standup, later",
        recurring_event_id=master.id,
        original_start=second,
        ical_uid=master.ical_uid,
    )
    await world.clock.advance(5)
    assert sorted(hooks.changes()) == ["all", "managed"]
    hooks.clear()

    # another application's managed event is not this app's: only the unfiltered channel
    theirs = {**single, "event_id": "theirs", "summary": "Other app's"}
    assert (await http.post(url, json=theirs, headers=bearer(other))).status_code == 202
    await world.clock.advance(5)
    assert hooks.changes() == ["all"]
