"""The shared sandbox machinery: world, clock, faults, delivery, control endpoints, the hook."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest
from calbridge_cronofy.sandbox import create_app

import calbridge
from calbridge import EventStatus, EventTime, PluginHost
from calbridge.errors import ProviderConflictError
from calbridge.sandbox import (
    ChangeKind,
    Clock,
    DeliveryAttempt,
    NativeChange,
    UnknownEvent,
    World,
    build_app,
    expand,
    installed_sandboxes,
)

from .conftest import Receiver

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, tzinfo=UTC)


def at(hours: float, tzid: str = "UTC") -> EventTime:
    return EventTime.zoned(T0 + dt.timedelta(hours=hours), tzid)


def test_users_calendars_and_ids_by_native_provider() -> None:
    world = World()
    g = world.add_user("G@Example.com")
    m = world.add_user("m@example.com", native="microsoft", time_zone="Europe/Paris")
    assert world.add_user("g@example.com") is g
    assert world.primary_calendar(g.email).id == "g@example.com"
    assert world.primary_calendar(m.email).id.startswith("AAMk")
    extra = world.add_calendar(g.email, "Team")
    assert extra.id.endswith("@group.calendar.google.com")
    assert [c.name for c in world.calendars(g.email)] == ["g@example.com", "Team"]
    assert world.primary_calendar(m.email).time_zone == "Europe/Paris"
    with pytest.raises(ValueError, match="native provider"):
        world.add_user("x@example.com", native="yahoo")  # type: ignore[arg-type]


def test_writes_bump_versions_and_sequences_and_keep_tombstones() -> None:
    world = World()
    cal = world.primary_calendar(world.add_user("a@example.com").email).id
    seen: list[NativeChange] = []
    unsubscribe = world.subscribe(seen.append)
    e = world.insert_event(
        cal, start=at(1), end=at(2), summary="one", private_properties={"k": "v"}
    )
    assert (e.version, e.sequence, e.etag) == (1, 1, '"0000000000000001"')
    other = world.insert_event(cal, start=at(3), end=at(4))
    updated = world.update_event(cal, e.id, summary="two")
    assert (updated.version, updated.sequence, updated.private_properties) == (2, 3, {"k": "v"})
    assert updated.ical_uid == e.ical_uid
    world.delete_event(cal, e.id)
    assert [ev.id for ev in world.events(cal)] == [other.id]
    tomb = world.event(cal, e.id, include_deleted=True)
    assert (tomb.deleted, tomb.status, tomb.sequence) == (True, EventStatus.CANCELLED, 4)
    assert [ev.id for ev in world.changes_since(cal, 2)] == [e.id]
    assert [c.kind for c in seen] == [
        ChangeKind.CREATED,
        ChangeKind.CREATED,
        ChangeKind.UPDATED,
        ChangeKind.DELETED,
    ]
    assert {c.origin for c in seen} == {"native"}
    with pytest.raises(UnknownEvent):
        world.event(cal, e.id)
    with pytest.raises(UnknownEvent):
        world.update_event(cal, e.id, summary="gone")
    with pytest.raises(TypeError):
        world.update_event(cal, other.id, id="new")
    with pytest.raises(ValueError, match="already exists"):
        world.insert_event(cal, start=at(1), end=at(2), id=other.id)
    unsubscribe()
    world.insert_event(cal, start=at(1), end=at(2))
    assert len(seen) == 4


def test_deleting_a_master_tombstones_its_exceptions() -> None:
    world = World()
    cal = world.primary_calendar(world.add_user("a@example.com").email).id
    master = world.insert_event(cal, start=at(0), end=at(1), recurrence=["RRULE:FREQ=DAILY"])
    world.insert_event(
        cal, start=at(25), end=at(26), recurring_event_id=master.id, original_start=at(24)
    )
    world.delete_event(cal, master.id)
    assert world.events(cal) == []
    assert len(world.events(cal, include_deleted=True)) == 2


def test_expand_series_with_zone_exdate_and_cancelled_exception() -> None:
    world = World()
    cal = world.primary_calendar(world.add_user("a@example.com").email).id
    # 09:00 Paris every day, across the end of daylight saving time
    start = dt.datetime(2026, 10, 23, 9, tzinfo=ZoneInfo("Europe/Paris"))
    master = world.insert_event(
        cal,
        start=EventTime.zoned(start, "Europe/Paris"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "Europe/Paris"),
        recurrence=["RRULE:FREQ=DAILY;COUNT=5", "EXDATE;TZID=Europe/Paris:20261024T090000"],
    )
    cancelled_start = EventTime.zoned(start + dt.timedelta(days=3), "Europe/Paris")
    world.insert_event(
        cal,
        start=EventTime.zoned(start + dt.timedelta(days=3, hours=2), "Europe/Paris"),
        end=EventTime.zoned(start + dt.timedelta(days=3, hours=3), "Europe/Paris"),
        recurring_event_id=master.id,
        original_start=cancelled_start,
        status=EventStatus.CANCELLED,
    )
    window = (dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2026, 11, 1, tzinfo=UTC))
    occ = expand(world.events(cal), *window)
    assert [o.start.as_utc().strftime("%d %H:%M") for o in occ] == [
        "23 07:00",  # CEST
        "25 08:00",  # CET after the change
        "27 08:00",
    ]
    assert occ[0].instance_id == f"{master.id}_20261023T070000Z"
    assert all(o.recurring for o in occ)


def test_all_day_instances_use_date_suffix() -> None:
    world = World()
    cal = world.primary_calendar(world.add_user("a@example.com").email).id
    d = dt.date(2026, 1, 5)
    master = world.insert_event(
        cal,
        start=EventTime.all_day(d),
        end=EventTime.all_day(d + dt.timedelta(days=1)),
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=2"],
    )
    occ = expand(world.events(cal), T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=30))
    assert [o.instance_id for o in occ] == [f"{master.id}_20260105", f"{master.id}_20260112"]
    assert occ[1].end == EventTime.all_day(dt.date(2026, 1, 13))


async def test_manual_clock_runs_timers_in_order_at_their_time() -> None:
    clock = Clock()
    ran: list[tuple[str, dt.datetime]] = []
    clock.call_later(10, lambda: ran.append(("b", clock.now())))
    clock.call_later(5, lambda: ran.append(("a", clock.now())))
    cancelled = clock.call_later(7, lambda: ran.append(("x", clock.now())))
    cancelled.cancel()

    async def chained() -> None:
        ran.append(("c", clock.now()))
        clock.call_later(1, lambda: ran.append(("d", clock.now())))

    clock.call_later(8, chained)
    assert clock.now() == T0
    await clock.advance(9.5)
    assert ran == [
        ("a", T0 + dt.timedelta(seconds=5)),
        ("c", T0 + dt.timedelta(seconds=8)),
        ("d", T0 + dt.timedelta(seconds=9)),
    ]
    assert clock.now() == T0 + dt.timedelta(seconds=9.5)
    await clock.advance(1)
    assert [name for name, _ in ran] == ["a", "c", "d", "b"]
    with pytest.raises(ValueError, match="backwards"):
        await clock.advance(-1)


async def test_realtime_clock_moves_and_advance_adds_offset() -> None:
    clock = Clock.realtime()
    before = clock.now()
    assert abs((before - dt.datetime.now(UTC)).total_seconds()) < 1
    fired: list[int] = []
    clock.call_later(3600, lambda: fired.append(1))
    assert await clock.run_due() == 0
    await clock.advance(3600)
    assert fired == [1]
    assert clock.now() - before >= dt.timedelta(hours=1)
    with pytest.raises(RuntimeError):
        clock.set(T0)


async def test_delivery_retries_with_backoff_until_success(receiver: Receiver) -> None:
    world = World(transport=httpx.ASGITransport(app=receiver.app()))
    receiver.status = 503
    results: list[DeliveryAttempt] = []
    world.delivery.deliver(
        "x", "http://hooks/hook", b'{"a":1}', {"X-Test": "1"}, on_result=results.append
    )
    await world.clock.advance(0)
    await world.clock.advance(30)
    receiver.status = 204
    await world.clock.advance(60)
    assert [(a.attempt, a.status, a.ok) for a in results] == [
        (1, 503, False),
        (2, 503, False),
        (3, 204, True),
    ]
    assert [(a.at - T0).total_seconds() for a in results] == [0, 30, 90]
    assert results[-1].final
    assert receiver.received[0].body == b'{"a":1}'
    assert receiver.received[0].headers["x-test"] == "1"
    assert world.clock.pending() == []


async def test_delivery_gives_up_and_keep_trying_stops_retries(receiver: Receiver) -> None:
    world = World(transport=httpx.ASGITransport(app=receiver.app()))
    receiver.status = 500
    from calbridge.sandbox import DeliveryPolicy

    policy = DeliveryPolicy(first_retry=10, factor=1, give_up_after=35)
    world.delivery.deliver("x", "http://hooks/hook", b"{}", {}, policy=policy)
    await world.clock.advance(100)
    assert [(a.at - T0).total_seconds() for a in world.delivery.attempts] == [0, 10, 20, 30, 35]
    assert world.delivery.attempts[-1].final
    open_ = [True]
    world.delivery.deliver("x", "http://hooks/hook", b"{}", {}, keep_trying=lambda: open_[0])
    await world.clock.advance(0)
    open_[0] = False
    await world.clock.advance(3600)
    assert len(world.delivery.attempts) == 6


async def test_connection_errors_are_failures() -> None:
    world = World(delivery_timeout=0.5)
    world.delivery.deliver("x", "http://127.0.0.1:9/hook", b"{}", {})
    await world.clock.advance(0)
    [attempt] = world.delivery.attempts
    assert not attempt.ok
    assert attempt.status is None
    assert attempt.error


def test_faults_are_consumed_per_provider() -> None:
    world = World()
    faults = world.faults
    faults.fail_next("cronofy", 500, times=2, path_prefix="/v1/events")
    assert faults.take_error("google", "/v1/events") is None
    assert faults.take_error("cronofy", "/v1/calendars") is None
    assert faults.take_error("cronofy", "/v1/events") is not None
    assert faults.take_error("cronofy", "/v1/events/pages/x") is not None
    assert faults.take_error("cronofy", "/v1/events") is None
    faults.fail_next("cronofy", 503, times=-1)
    for _ in range(3):
        assert faults.take_error("cronofy", "/") is not None
    faults.clear("cronofy")
    assert faults.take_error("cronofy", "/") is None
    with pytest.raises(ValueError, match="4xx or 5xx"):
        faults.fail_next("cronofy", 200)
    faults.drop_notifications("p")
    faults.duplicate_notifications("p")
    assert [faults.notification_fate("p") for _ in range(3)] == ["drop", "duplicate", "deliver"]
    with pytest.raises(LookupError):
        faults.trigger("nobody", "expire_tokens", "a@example.com")
    with pytest.raises(ValueError, match="unknown fault action"):
        faults.on("p", "explode", lambda email: None)


async def test_control_endpoints_act_behind_the_apps_back() -> None:
    world = World()
    app = build_app(world, {"cronofy": create_app})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sb"
    ) as http:
        index = (await http.get("/_sandbox/")).json()
        assert index["providers"] == {"cronofy": "http://sb/cronofy"}
        r = await http.post(
            "/_sandbox/users", json={"email": "b@example.com", "native": "microsoft"}
        )
        assert r.status_code == 201
        cal = r.json()["calendars"][0]["id"]
        r = await http.post(
            f"/_sandbox/calendars/{cal}/events",
            json={
                "summary": "Team",
                "start": "2026-01-06T10:00:00+01:00",
                "end": {"time": "2026-01-06T11:00:00", "tzid": "Europe/Paris"},
                "attendees": [{"email": "c@example.com", "response": "accepted"}],
            },
        )
        assert r.status_code == 201, r.text
        event = r.json()
        assert event["end"] == {"time": "2026-01-06T11:00:00+01:00", "tzid": "Europe/Paris"}
        r = await http.patch(
            f"/_sandbox/calendars/{cal}/events/{event['id']}", json={"summary": "Team sync"}
        )
        assert r.json()["version"] == 2
        r = await http.post("/_sandbox/users/b@example.com/calendars", json={"name": "Side"})
        assert r.status_code == 201
        assert (await http.post("/_sandbox/clock", json={"seconds": 60})).json()["now"] == (
            "2026-01-05T09:01:00+00:00"
        )
        r = await http.post("/_sandbox/faults/cronofy", json={"status": 503, "times": 1})
        assert r.status_code == 204
        assert (await http.get("/cronofy/v1/userinfo")).status_code == 503
        r = await http.post("/_sandbox/faults/cronofy", json={"action": "nope", "email": "b@x"})
        assert r.status_code == 400
        r = await http.post(
            "/_sandbox/faults/google", json={"action": "expire_tokens", "email": "b@example.com"}
        )
        assert r.status_code == 404
        r = await http.delete(f"/_sandbox/calendars/{cal}/events/{event['id']}")
        assert r.status_code == 204
        events = (await http.get(f"/_sandbox/calendars/{cal}/events?include_deleted=true")).json()
        assert [e["deleted"] for e in events["events"]] == [True]
        assert (await http.get("/_sandbox/calendars/nope/events")).status_code == 404
        assert (await http.get("/_sandbox/deliveries")).json() == {"deliveries": []}


def test_hook_register_sandboxes() -> None:
    """The Cronofy sandbox is registered through the hook; duplicates are refused."""
    assert "cronofy" in installed_sandboxes()
    host = PluginHost(entry_points=False, strict=True)

    class Duplicate:
        @calbridge.hookimpl
        def register_sandboxes(self, register: object) -> None:
            register("cronofy", create_app)  # type: ignore[operator]

    host.register(Duplicate(), name="duplicate")
    with pytest.raises(ProviderConflictError):
        host.sandbox_factories()
