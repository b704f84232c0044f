"""Proof against the real client: pycronofy (PyPI) talks to the sandbox over loopback HTTP."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import httpx
import pycronofy
import pytest
from calbridge_cronofy.sandbox import create_app
from pycronofy import settings

from calbridge import EventTime
from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread

from .conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT, Receiver, make_world

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, tzinfo=UTC)


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[World, LoopbackServer]]:
    world = make_world()
    with serve_in_thread(build_app(world, {"cronofy": create_app})) as server:
        monkeypatch.setattr(settings, "API_BASE_URL", server.base_url + "/cronofy")
        monkeypatch.setattr(settings, "APP_BASE_URL", server.base_url + "/cronofy")
        yield world, server


def advance(server: LoopbackServer, world: World, seconds: float) -> None:
    server.call(lambda: world.clock.advance(seconds))


def authorized_client(scope: str = "") -> pycronofy.Client:
    client = pycronofy.Client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    link = client.user_auth_link(REDIRECT, scope=scope, state="xyz")
    r = httpx.get(link + "&login_hint=alice%40example.com")
    assert r.status_code == 302
    query = parse_qs(urlparse(r.headers["location"]).query)
    assert query["state"] == ["xyz"]
    tokens = client.get_authorization_from_code(query["code"][0], redirect_uri=REDIRECT)
    assert set(tokens) == {"access_token", "refresh_token", "token_expiration"}
    return client


def test_code_exchange_refresh_and_calendars(sandbox: tuple[World, LoopbackServer]) -> None:
    client = authorized_client()
    before = client.auth.access_token
    refreshed = client.refresh_authorization()
    assert refreshed["access_token"] != before
    assert client.userinfo()["email"] == "alice@example.com"
    assert client.account()["email"] == "alice@example.com"
    [calendar] = client.list_calendars()
    assert calendar["calendar_primary"] is True
    assert calendar["provider_name"] == "google"
    [profile] = client.list_profiles()
    assert profile["profile_connected"] is True


def test_upsert_read_several_pages_and_delete(sandbox: tuple[World, LoopbackServer]) -> None:
    world, server = sandbox
    client = authorized_client()
    cid = client.list_calendars()[0]["calendar_id"]
    native = world.primary_calendar("alice@example.com")
    for i in range(240):
        start = T0 + dt.timedelta(hours=i + 1)
        world.insert_event(
            native.id,
            start=EventTime.zoned(start),
            end=EventTime.zoned(start + dt.timedelta(minutes=30)),
            summary=f"native {i}",
        )
    client.upsert_event(
        cid,
        {
            "event_id": "app-1",
            "summary": "From the app",
            "start": T0 + dt.timedelta(days=1),
            "end": T0 + dt.timedelta(days=1, hours=1),
        },
    )
    advance(server, world, 5)

    pages = client.read_events(calendar_ids=[cid], tzid="Europe/London")
    assert pages.total == 3  # 241 events, 100 per page
    events = pages.all()
    assert len(events) == 241
    mine = [e for e in events if e.get("event_id") == "app-1"]  # pycronofy includes managed
    assert [e["summary"] for e in mine] == ["From the app"]
    natively = [e for e in world.events(native.id) if e.summary == "From the app"]
    assert natively[0].ical_uid == mine[0]["ical_uid"]
    assert natively[0].id != mine[0]["event_uid"]

    client.delete_event(cid, "app-1")
    advance(server, world, 5)
    assert [e for e in world.events(native.id) if e.summary == "From the app"] == []
    ids = [e.get("event_id") for e in client.read_events(calendar_ids=[cid]).all()]
    assert "app-1" not in ids

    busy = client.read_free_busy(
        calendar_ids=[cid], from_date=T0.date(), to_date=(T0 + dt.timedelta(days=1)).date()
    ).all()
    assert len(busy) == 14  # the native events starting 10:00 ... 23:00 on 5 January
    assert {b["free_busy_status"] for b in busy} == {"busy"}


def test_channels_and_hmac_valid(
    sandbox: tuple[World, LoopbackServer],
    loopback_receiver: tuple[Receiver, LoopbackServer],
) -> None:
    world, server = sandbox
    receiver, hooks = loopback_receiver
    client = authorized_client()
    url = hooks.base_url + "/hook"
    channel = client.create_notification_channel(url)
    assert channel["callback_url"] == url
    assert client.create_notification_channel(url)["channel_id"] == channel["channel_id"]
    advance(server, world, 0)

    native = world.primary_calendar("alice@example.com")
    world.insert_event(
        native.id,
        start=EventTime.zoned(T0 + dt.timedelta(hours=3)),
        end=EventTime.zoned(T0 + dt.timedelta(hours=4)),
        summary="Behind the back",
    )
    advance(server, world, 10)

    kinds = [json.loads(r.body)["notification"]["type"] for r in receiver.received]
    assert kinds == ["verification", "change"]
    for got in receiver.received:
        assert client.hmac_valid(got.headers["cronofy-hmac-sha256"], got.body.decode())
        assert not client.hmac_valid(got.headers["cronofy-hmac-sha256"], got.body.decode() + " ")
    since = json.loads(receiver.received[1].body)["notification"]["changes_since"]
    changed = client.read_events(last_modified=since).all()
    assert [e["summary"] for e in changed] == ["Behind the back"]

    assert [c["channel_id"] for c in client.list_notification_channels()] == [channel["channel_id"]]
    client.close_notification_channel(channel["channel_id"])
    assert client.list_notification_channels() == []


def test_slow_receiver_counts_as_failure(
    loopback_receiver: tuple[Receiver, LoopbackServer],
) -> None:
    """Over real HTTP: an answer later than the delivery timeout is a failed attempt."""
    receiver, hooks = loopback_receiver
    receiver.delay = 1.0
    world = World(delivery_timeout=0.2)
    world.delivery.deliver("cronofy", hooks.base_url + "/hook", b"{}", {})
    import asyncio

    asyncio.run(world.clock.advance(0))
    [attempt] = world.delivery.attempts
    assert (attempt.ok, attempt.error, attempt.final) == (False, "timeout", False)
    assert [t.when for t in world.clock.pending()] == [T0 + dt.timedelta(seconds=30)]


def test_enterprise_connect_service_account_flow(
    sandbox: tuple[World, LoopbackServer],
    loopback_receiver: tuple[Receiver, LoopbackServer],
) -> None:
    world, server = sandbox
    receiver, hooks = loopback_receiver
    admin = pycronofy.Client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    r = httpx.get(
        settings.APP_BASE_URL + "/enterprise_connect/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "service_account/accounts/manage",
            "delegated_scope": "read_write",
            "state": "ec",
            "login_hint": "it@corp.example",
        },
    )
    code = parse_qs(urlparse(r.headers["location"]).query)["code"][0]
    admin.get_authorization_from_code(code, redirect_uri=REDIRECT)
    assert admin.userinfo()["cronofy.type"] == "service_account"
    callback = hooks.base_url + "/hook"
    admin.authorize_with_service_account("bob@corp.example", "read_write", callback, state="b")
    admin.authorize_with_service_account("eve@elsewhere.example", "read_write", callback)
    advance(server, world, 2)

    granted, refused = (json.loads(got.body)["authorization"] for got in receiver.received)
    assert granted["state"] == "b"
    assert refused["error"] == "access_denied"
    for got in receiver.received:
        assert admin.hmac_valid(got.headers["cronofy-hmac-sha256"], got.body.decode())
    bob = pycronofy.Client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    bob.get_authorization_from_code(granted["code"], redirect_uri=callback)
    assert bob.userinfo()["email"] == "bob@corp.example"
    assert bob.list_calendars()[0]["calendar_primary"] is True


def test_batch_upserts_and_deletes_with_207(sandbox: tuple[World, LoopbackServer]) -> None:
    from pycronofy.batch import BatchBuilder
    from pycronofy.exceptions import PyCronofyPartialSuccessError

    world, server = sandbox
    client = authorized_client()
    cid = client.list_calendars()[0]["calendar_id"]
    builder = BatchBuilder()
    for n in range(3):
        start = T0 + dt.timedelta(days=1, hours=n)
        builder.upsert_event(
            cid,
            {
                "event_id": f"b{n}",
                "summary": f"batch {n}",
                "start": start,
                "end": start + dt.timedelta(minutes=30),
            },
        )
    response = client.batch(builder)
    assert [entry.status() for entry in response.entries] == [202, 202, 202]
    advance(server, world, 5)
    native = world.primary_calendar("alice@example.com").id
    assert sorted(e.summary or "" for e in world.events(native)) == [
        "batch 0",
        "batch 1",
        "batch 2",
    ]

    builder = BatchBuilder()
    builder.delete_event(cid, "b0")
    builder.upsert_event(cid, {"event_id": "bad", "start": T0, "end": T0})  # no summary
    with pytest.raises(PyCronofyPartialSuccessError) as failure:
        client.batch(builder)
    statuses = [entry.status() for entry in failure.value.batch_response.entries]
    assert statuses == [202, 422]
    advance(server, world, 5)
    assert sorted(e.summary or "" for e in world.events(native)) == ["batch 1", "batch 2"]


def test_real_time_clock_delivers_within_seconds(
    monkeypatch: pytest.MonkeyPatch, loopback_receiver: tuple[Receiver, LoopbackServer]
) -> None:
    """As `sandbox serve` runs it: real-time clock plus ticker, no manual advancing."""
    import time

    from calbridge.sandbox import Clock

    receiver, hooks = loopback_receiver
    world = make_world(clock=Clock.realtime())
    app = build_app(world, {"cronofy": create_app}, tick_interval=0.05)
    with serve_in_thread(app) as server:
        monkeypatch.setattr(settings, "API_BASE_URL", server.base_url + "/cronofy")
        monkeypatch.setattr(settings, "APP_BASE_URL", server.base_url + "/cronofy")
        client = authorized_client()
        client.create_notification_channel(hooks.base_url + "/hook")
        native = world.primary_calendar("alice@example.com")
        now = world.clock.now()
        world.insert_event(
            native.id,
            start=EventTime.zoned(now + dt.timedelta(hours=1)),
            end=EventTime.zoned(now + dt.timedelta(hours=2)),
            summary="Live",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(receiver.received) < 2:
            time.sleep(0.05)
        kinds = [json.loads(r.body)["notification"]["type"] for r in receiver.received]
        assert kinds == ["verification", "change"]
        assert [e["summary"] for e in client.read_events().all()] == ["Live"]
