"""The Cronofy sandbox in-process (httpx.ASGITransport): wire format, writes, channels, limits."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
from typing import Any

import httpx
from calbridge_cronofy.sandbox import engine_for

from calbridge import EventTime
from calbridge.sandbox import World

from .conftest import BASE, CLIENT_ID, CLIENT_SECRET, REDIRECT, Receiver, bearer, connect

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 5, 9, tzinfo=UTC)  # the manual clock's start


def at(hours: float) -> EventTime:
    return EventTime.zoned(T0 + dt.timedelta(hours=hours), "UTC")


async def calendar_id(http: httpx.AsyncClient, token: dict[str, Any]) -> str:
    r = await http.get("/cronofy/v1/calendars", headers=bearer(token))
    assert r.status_code == 200
    cid: str = r.json()["calendars"][0]["calendar_id"]
    return cid


async def read(http: httpx.AsyncClient, token: dict[str, Any], **params: Any) -> list[Any]:
    params.setdefault("tzid", "Etc/UTC")
    r = await http.get("/cronofy/v1/events", params=params, headers=bearer(token))
    assert r.status_code == 200, r.text
    events: list[Any] = r.json()["events"]
    return events


async def refresh(http: httpx.AsyncClient, token: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
        },
    )
    assert r.status_code == 200
    fresh: dict[str, Any] = r.json()
    return fresh


def signed(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def test_authorize_redirects_with_code_and_state_and_creates_the_user(
    http: httpx.AsyncClient, world: World
) -> None:
    r = await http.get(
        "/cronofy/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT + "?x=1",
            "scope": "read_events",
            "state": "s 1",
            "login_hint": "Bob@Example.com",
            "provider_name": "office365",
        },
    )
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith(REDIRECT + "?x=1&code=")
    assert location.endswith("&state=s+1")
    user = world.user("bob@example.com")
    assert user.native == "microsoft"
    assert [c.primary for c in world.calendars(user.email)] == [True]
    r = await http.get("/cronofy/oauth/authorize", params={"client_id": "nobody"})
    assert r.status_code == 400


async def test_token_exchange_refresh_and_invalid_grant(http: httpx.AsyncClient) -> None:
    token = await connect(http)
    assert token["token_type"] == "bearer"
    assert token["expires_in"] == 3600
    assert token["sub"] == token["account_id"]
    assert token["sub"].startswith("acc_")
    assert token["linking_profile"]["provider_name"] == "google"
    assert token["linking_profile"]["profile_name"] == "alice@example.com"
    # form-encoded refresh (cronofy-ruby's way)
    r = await http.post(
        "/cronofy/oauth/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
        },
    )
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    refreshed = r.json()
    assert set(refreshed) == {"token_type", "access_token", "expires_in", "refresh_token", "scope"}
    assert refreshed["access_token"] != token["access_token"]
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": "nope",
        },
    )
    assert (r.status_code, r.json()) == (400, {"error": "invalid_grant"})
    r = await http.post(
        "/cronofy/oauth/token",
        json={"client_id": CLIENT_ID, "client_secret": "wrong", "grant_type": "refresh_token"},
    )
    assert (r.status_code, r.json()) == (400, {"error": "invalid_client"})
    # revoke with the refresh token: both tokens die
    r = await http.post(
        "/cronofy/oauth/token/revoke",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token": token["refresh_token"],
        },
    )
    assert (r.status_code, r.content) == (200, b"")
    r = await http.get("/cronofy/v1/userinfo", headers=bearer(refreshed))
    assert r.status_code == 401


async def test_code_is_single_use_and_bound_to_redirect_uri(http: httpx.AsyncClient) -> None:
    r = await http.get(
        "/cronofy/oauth/authorize",
        params={"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT},
    )
    code = r.headers["location"].split("code=")[1].split("&")[0]
    body = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://elsewhere/cb",
    }
    r = await http.post("/cronofy/oauth/token", json=body)
    assert r.json() == {"error": "invalid_grant"}
    body["redirect_uri"] = REDIRECT
    r = await http.post("/cronofy/oauth/token", json=body)
    assert r.json() == {"error": "invalid_grant"}  # consumed by the failed attempt


async def test_userinfo_and_profiles(http: httpx.AsyncClient) -> None:
    token = await connect(http)
    info = (await http.get("/cronofy/v1/userinfo", headers=bearer(token))).json()
    assert info["sub"] == token["sub"]
    assert info["cronofy.type"] == "account"
    profile = info["cronofy.data"]["profiles"][0]
    assert profile["profile_connected"] is True
    assert profile["profile_initial_sync_required"] is False
    assert profile["profile_calendars"][0]["calendar_primary"] is True
    r = await http.get("/cronofy/v1/userinfo")
    assert r.status_code == 401


async def test_read_events_shape_managed_filter_and_same_ical_uid(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    native_cal = world.primary_calendar("alice@example.com")
    native = world.insert_event(native_cal.id, start=at(24), end=at(25), summary="Dentist")
    body = {
        "event_id": "app-1",
        "summary": "Ours",
        "start": "2026-01-07T10:00:00Z",
        "end": "2026-01-07T11:00:00Z",
    }
    r = await http.post(f"/cronofy/v1/calendars/{cid}/events", json=body, headers=bearer(token))
    assert (r.status_code, r.content) == (202, b"")
    assert [e.summary for e in world.events(native_cal.id)] == ["Dentist"]  # not applied yet
    await world.clock.advance(5)
    ours = next(e for e in world.events(native_cal.id) if e.summary == "Ours")

    default = await read(http, token)
    assert [e["summary"] for e in default] == ["Dentist"]  # include_managed defaults to false
    dentist = default[0]
    assert "event_id" not in dentist
    assert dentist["event_uid"].startswith("evt_external_")
    assert dentist["event_uid"] != native.id
    assert dentist["ical_uid"] == native.ical_uid
    assert dentist["start"] == "2026-01-06T09:00:00Z"
    assert dentist["calendar_id"] == cid

    both = await read(http, token, include_managed="True")  # pycronofy's spelling
    managed = next(e for e in both if e["summary"] == "Ours")
    assert managed["event_id"] == "app-1"
    assert managed["ical_uid"] == ours.ical_uid
    assert managed["event_uid"]

    localized = await read(http, token, localized_times="true", tzid="Europe/Paris")
    assert localized[0]["start"] == {"time": "2026-01-06T09:00:00+00:00", "tzid": "UTC"}
    google = await read(http, token, google_event_ids="true")
    assert google[0]["google_event_id"] == native.id


async def test_upsert_updates_then_delete_reconciles_natively(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    url = f"/cronofy/v1/calendars/{cid}/events"
    body = {
        "event_id": "k",
        "summary": "v1",
        "start": {"time": "2026-01-08T09:00:00", "tzid": "Europe/Paris"},
        "end": {"time": "2026-01-08T10:00:00", "tzid": "Europe/Paris"},
    }
    await http.post(url, json=body, headers=bearer(token))
    await http.post(url, json={**body, "summary": "v2"}, headers=bearer(token))
    await world.clock.advance(5)
    natives = world.events(world.primary_calendar("alice@example.com").id)
    assert [(e.summary, e.version, e.start.tzid) for e in natives] == [("v2", 2, "Europe/Paris")]
    assert natives[0].start.as_utc() == dt.datetime(2026, 1, 8, 8, tzinfo=UTC)
    r = await http.request("DELETE", url, json={"event_id": "k"}, headers=bearer(token))
    assert (r.status_code, r.content) == (202, b"")
    await world.clock.advance(5)
    assert world.events(natives[0].calendar_id) == []
    deleted = await read(http, token, include_managed="true", include_deleted="true")
    assert [(e["event_id"], e["deleted"]) for e in deleted] == [("k", True)]


async def test_upsert_validation_errors(http: httpx.AsyncClient) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    url = f"/cronofy/v1/calendars/{cid}/events"
    r = await http.post(url, json={"summary": "x"}, headers=bearer(token))
    assert r.status_code == 422
    assert r.json() == {
        "errors": {"event_id": [{"key": "errors.required", "description": "required"}]}
    }
    r = await http.post(
        url,
        json={"event_id": "a", "summary": "x", "start": "2026-01-08T09:00:00Z"},
        headers=bearer(token),
    )
    assert r.status_code == 422
    assert "end" in r.json()["errors"]
    r = await http.post("/cronofy/v1/calendars/cal_nope/events", json={}, headers=bearer(token))
    assert r.status_code == 404
    r = await http.get("/cronofy/v1/events", headers=bearer(token))
    assert r.status_code == 422  # tzid is required


async def test_missing_scope_is_403(http: httpx.AsyncClient) -> None:
    token = await connect(http, scope="read_events")
    cid = await calendar_id(http, token)
    r = await http.post(f"/cronofy/v1/calendars/{cid}/events", json={}, headers=bearer(token))
    assert r.status_code == 403


async def test_paging_uses_absolute_next_page_urls(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    native_cal = world.primary_calendar("alice@example.com")
    for i in range(230):
        world.insert_event(native_cal.id, start=at(i), end=at(i + 0.5), summary=f"e{i}")
    await world.clock.advance(3)  # the native push reaches Cronofy
    r = await http.get("/cronofy/v1/events", params={"tzid": "Etc/UTC"}, headers=bearer(token))
    page = r.json()
    assert page["pages"]["current"] == 1
    assert page["pages"]["total"] == 3
    summaries = [e["summary"] for e in page["events"]]
    while "next_page" in page["pages"]:
        assert page["pages"]["next_page"].startswith(f"{BASE}/cronofy/v1/events/pages/")
        page = (await http.get(page["pages"]["next_page"], headers=bearer(token))).json()
        summaries += [e["summary"] for e in page["events"]]
    assert page["pages"] == {"current": 3, "total": 3}
    assert summaries == [f"e{i}" for i in range(230)]
    r = await http.get("/cronofy/v1/events/pages/unknown", headers=bearer(token))
    assert r.status_code == 404


async def test_recurring_series_is_expanded_with_exceptions(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    cal = world.primary_calendar("alice@example.com")
    master = world.insert_event(
        cal.id, start=at(24), end=at(25), summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=3"]
    )
    world.insert_event(
        cal.id,
        start=at(50),
        end=at(51),
        summary="Moved standup",
        recurring_event_id=master.id,
        original_start=at(48),
        ical_uid=master.ical_uid,
    )
    await world.clock.advance(3)
    events = await read(http, token)
    assert [(e["summary"], e["start"], e["recurring"]) for e in events] == [
        ("Standup", "2026-01-06T09:00:00Z", True),
        ("Moved standup", "2026-01-07T11:00:00Z", True),
        ("Standup", "2026-01-08T09:00:00Z", True),
    ]
    assert len({e["event_uid"] for e in events}) == 3
    assert {e["ical_uid"] for e in events} == {master.ical_uid}


async def test_free_busy(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    cal = world.primary_calendar("alice@example.com")
    world.insert_event(cal.id, start=at(1), end=at(2), summary="busy")
    from calbridge import Transparency

    world.insert_event(cal.id, start=at(3), end=at(4), transparency=Transparency.TRANSPARENT)
    await world.clock.advance(3)
    r = await http.get("/cronofy/v1/free_busy", params={"tzid": "Etc/UTC"}, headers=bearer(token))
    assert r.json()["free_busy"] == [
        {
            "calendar_id": await calendar_id(http, token),
            "start": "2026-01-05T10:00:00Z",
            "end": "2026-01-05T11:00:00Z",
            "free_busy_status": "busy",
        }
    ]


async def make_channel(
    http: httpx.AsyncClient, token: dict[str, Any], **filters: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"callback_url": "http://hooks/hook"}
    if filters:
        body["filters"] = filters
    r = await http.post("/cronofy/v1/channels", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    channel: dict[str, Any] = r.json()["channel"]
    return channel


def notifications(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received]


async def test_channels_verify_sign_and_notify_changes_but_not_own_writes(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    channel = await make_channel(http, token)
    assert channel["channel_id"].startswith("chn_")
    assert channel["filters"] == {}
    await world.clock.advance(0)
    [verification] = receiver.received
    assert verification.headers["cronofy-hmac-sha256"] == signed(CLIENT_SECRET, verification.body)
    assert json.loads(verification.body) == {
        "notification": {"type": "verification"},
        "channel": channel,
    }

    # the app's own write: applied natively, no notification
    body = {
        "event_id": "mine",
        "summary": "Mine",
        "start": "2026-01-07T10:00:00Z",
        "end": "2026-01-07T11:00:00Z",
    }
    await http.post(f"/cronofy/v1/calendars/{cid}/events", json=body, headers=bearer(token))
    await world.clock.advance(10)
    assert len(receiver.received) == 1

    # the user's own change in their Google calendar: one change notification
    cal = world.primary_calendar("alice@example.com")
    world.insert_event(cal.id, start=at(30), end=at(31), summary="Lunch")
    await world.clock.advance(10)
    [change] = notifications(receiver)[1:]
    assert change["notification"]["type"] == "change"
    since = change["notification"]["changes_since"]
    assert since.endswith("Z")
    changed = await read(http, token, last_modified=since)
    assert [e["summary"] for e in changed] == ["Lunch"]
    assert receiver.received[1].headers["cronofy-hmac-sha256"] == signed(
        CLIENT_SECRET, receiver.received[1].body
    )


async def test_channel_create_is_idempotent_and_limited(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    first = await make_channel(http, token)
    assert (await make_channel(http, token))["channel_id"] == first["channel_id"]
    engine_for(world).settings.max_channels = 3
    cid = await calendar_id(http, token)
    await make_channel(http, token, calendar_ids=[cid])
    await make_channel(http, token, only_managed=True)
    r = await http.post(
        "/cronofy/v1/channels",
        json={"callback_url": "http://hooks/other"},
        headers=bearer(token),
    )
    assert r.status_code == 422
    listed = (await http.get("/cronofy/v1/channels", headers=bearer(token))).json()["channels"]
    assert len(listed) == 3
    r = await http.delete(f"/cronofy/v1/channels/{first['channel_id']}", headers=bearer(token))
    assert (r.status_code, r.content) == (202, b"")
    r = await http.delete(f"/cronofy/v1/channels/{first['channel_id']}", headers=bearer(token))
    assert r.status_code == 404


async def test_failing_channel_is_retried_then_closed_after_24_hours(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    channel = await make_channel(http, token)
    receiver.status = 500
    await world.clock.advance(23 * 3600)
    attempts = [a for a in world.delivery.attempts if a.provider == "cronofy"]
    assert len(attempts) > 5
    delays = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert delays[:3] == [30.0, 60.0, 120.0]  # backoff on the sandbox clock
    token = await refresh(http, token)  # an hour-long access token expired meanwhile
    listed = (await http.get("/cronofy/v1/channels", headers=bearer(token))).json()["channels"]
    assert [c["channel_id"] for c in listed] == [channel["channel_id"]]
    await world.clock.advance(2 * 3600)
    token = await refresh(http, token)
    listed = (await http.get("/cronofy/v1/channels", headers=bearer(token))).json()["channels"]
    assert listed == []


async def test_no_push_when_an_event_enters_the_sync_window(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    await make_channel(http, token)
    cal = world.primary_calendar("alice@example.com")
    far = T0 + dt.timedelta(days=205)
    world.insert_event(
        cal.id,
        start=EventTime.zoned(far),
        end=EventTime.zoned(far + dt.timedelta(hours=1)),
        summary="Far away",
    )
    await world.clock.advance(10)
    assert [n["notification"]["type"] for n in notifications(receiver)] == ["verification"]
    assert await read(http, token, to="2026-12-31") == []  # outside the window: not synced
    await world.clock.advance(5 * 86400)  # the window moves over it; polls pick it up
    token = await refresh(http, token)
    assert [n["notification"]["type"] for n in notifications(receiver)] == ["verification"]
    assert [e["summary"] for e in await read(http, token)] == ["Far away"]


async def test_polling_finds_changes_when_native_push_is_off(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    engine_for(world).settings.native_push = False
    await make_channel(http, token)
    cal = world.primary_calendar("alice@example.com")
    world.insert_event(cal.id, start=at(2), end=at(3), summary="Quiet")
    await world.clock.advance(200)
    assert await read(http, token) == []
    await world.clock.advance(100)  # the 5-minute poll
    assert [e["summary"] for e in await read(http, token)] == ["Quiet"]
    assert notifications(receiver)[-1]["notification"]["type"] == "change"


async def test_rate_limit_answers_429(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    engine_for(world).settings.rate_limits = ((5, 60.0),)
    statuses = [
        (await http.get("/cronofy/v1/calendars", headers=bearer(token))).status_code
        for _ in range(7)
    ]
    assert statuses == [200] * 5 + [429] * 2


async def test_injected_faults(http: httpx.AsyncClient, world: World, receiver: Receiver) -> None:
    token = await connect(http)
    world.faults.fail_next("cronofy", 503, times=2, path_prefix="/v1/calendars")
    world.faults.fail_next("cronofy", 429, retry_after=7)
    codes = []
    for _ in range(3):
        codes.append((await http.get("/cronofy/v1/calendars", headers=bearer(token))).status_code)
    assert codes == [503, 503, 429]
    r = await http.get("/cronofy/v1/calendars", headers=bearer(token))
    assert r.status_code == 200

    world.faults.trigger("cronofy", "expire_tokens", "alice@example.com")
    assert (await http.get("/cronofy/v1/calendars", headers=bearer(token))).status_code == 401
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
        },
    )
    fresh = r.json()
    assert (await http.get("/cronofy/v1/calendars", headers=bearer(fresh))).status_code == 200

    world.faults.drop_notifications("cronofy")  # the verification is lost
    world.faults.duplicate_notifications("cronofy")  # the next one arrives twice
    await make_channel(http, token=fresh)
    world.faults.trigger("cronofy", "disconnect_profile", "alice@example.com")
    await world.clock.advance(0)
    assert [n["notification"]["type"] for n in notifications(receiver)] == [
        "profile_disconnected",
        "profile_disconnected",
    ]
    info = (await http.get("/cronofy/v1/userinfo", headers=bearer(fresh))).json()
    profile = info["cronofy.data"]["profiles"][0]
    assert profile["profile_connected"] is False
    assert profile["profile_relink_url"].startswith(f"{BASE}/cronofy/oauth/authorize")

    world.faults.trigger("cronofy", "revoke_tokens", "alice@example.com")
    r = await http.post(
        "/cronofy/oauth/token",
        json={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": fresh["refresh_token"],
        },
    )
    assert r.json() == {"error": "invalid_grant"}


async def test_second_application_is_notified_of_the_first_ones_writes(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    token = await connect(http)
    world.add_application("other", "other-secret")
    r = await http.get(
        "/cronofy/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": "other",
            "redirect_uri": REDIRECT,
            "login_hint": "alice@example.com",
        },
    )
    code = r.headers["location"].split("code=")[1].split("&")[0]
    other = (
        await http.post(
            "/cronofy/oauth/token",
            json={
                "client_id": "other",
                "client_secret": "other-secret",
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT,
            },
        )
    ).json()
    assert other["sub"] == token["sub"]
    await make_channel(http, other)
    cid = await calendar_id(http, token)
    body = {
        "event_id": "x",
        "summary": "From app one",
        "start": "2026-01-07T10:00:00Z",
        "end": "2026-01-07T11:00:00Z",
    }
    await http.post(f"/cronofy/v1/calendars/{cid}/events", json=body, headers=bearer(token))
    await world.clock.advance(5)
    kinds = [n["notification"]["type"] for n in notifications(receiver)]
    assert kinds == ["verification", "change"]
    assert receiver.received[1].headers["cronofy-hmac-sha256"] == signed(
        "other-secret", receiver.received[1].body
    )


async def test_secret_rotation_signs_with_every_active_secret(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    import pycronofy

    token = await connect(http)
    world.rotate_application_secret(CLIENT_ID, "new secret")
    await make_channel(http, token)
    await world.clock.advance(0)
    got = receiver.received[0]
    header = got.headers["cronofy-hmac-sha256"]
    assert header == f"{signed('new secret', got.body)},{signed(CLIENT_SECRET, got.body)}"
    for secret in ("new secret", CLIENT_SECRET):
        client = pycronofy.Client(client_id=CLIENT_ID, client_secret=secret)
        assert client.hmac_valid(header, got.body.decode())
    # both secrets work at the token endpoint during the rotation; only the new one after
    for secret, status in (("new secret", 200), (CLIENT_SECRET, 200)):
        body = {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
        }
        assert (await http.post("/cronofy/oauth/token", json=body)).status_code == status
    world.retire_previous_secrets(CLIENT_ID)
    body["client_secret"] = CLIENT_SECRET
    r = await http.post("/cronofy/oauth/token", json=body)
    assert r.json() == {"error": "invalid_client"}


async def test_service_account_tokens_cannot_read_calendars(http: httpx.AsyncClient) -> None:
    r = await http.get(
        "/cronofy/enterprise_connect/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "service_account/accounts/manage",
        },
    )
    code = r.headers["location"].split("code=")[1]
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
    token = r.json()
    assert token["expires_in"] == 1800
    assert token["service_account_id"].startswith("ser_")
    assert "sub" not in token
    assert (await http.get("/cronofy/v1/calendars", headers=bearer(token))).status_code == 403
    r = await http.get(
        "/cronofy/enterprise_connect/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "read_events",
        },
    )
    assert "error=invalid_scope" in r.headers["location"]


async def test_initial_sync_required_until_completed(
    http: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    engine_for(world).settings.initial_sync_delay = 60
    world.add_user("carol@example.com")
    world.insert_event(
        world.primary_calendar("carol@example.com").id, start=at(5), end=at(6), summary="Old"
    )
    token = await connect(http, email="carol@example.com")
    info = (await http.get("/cronofy/v1/userinfo", headers=bearer(token))).json()
    assert info["cronofy.data"]["profiles"][0]["profile_initial_sync_required"] is True
    await make_channel(http, token)
    assert await read(http, token) == []
    await world.clock.advance(60)
    kinds = [n["notification"]["type"] for n in notifications(receiver)]
    assert kinds == ["verification", "profile_initial_sync_completed"]
    assert [e["summary"] for e in await read(http, token)] == ["Old"]
    info = (await http.get("/cronofy/v1/userinfo", headers=bearer(token))).json()
    assert info["cronofy.data"]["profiles"][0]["profile_initial_sync_required"] is False


async def test_rate_limits_can_be_switched_off(http: httpx.AsyncClient, world: World) -> None:
    token = await connect(http)
    engine_for(world).settings.rate_limits = ((2, 60.0),)
    world.rate_limits = False
    for _ in range(5):
        assert (await http.get("/cronofy/v1/calendars", headers=bearer(token))).status_code == 200


async def test_managed_events_are_not_limited_by_the_default_window(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    cid = await calendar_id(http, token)
    body = {
        "event_id": "far",
        "summary": "Next year",
        "start": "2026-12-01T09:00:00Z",
        "end": "2026-12-01T10:00:00Z",
    }
    await http.post(f"/cronofy/v1/calendars/{cid}/events", json=body, headers=bearer(token))
    await world.clock.advance(5)
    assert await read(http, token) == []
    managed = await read(http, token, include_managed="true")
    assert [e["event_id"] for e in managed] == ["far"]
    assert await read(http, token, include_managed="true", to="2026-06-01") == []


async def test_participation_status_and_bulk_delete(http: httpx.AsyncClient, world: World) -> None:
    from calbridge import Attendee, Person

    token = await connect(http)
    cid = await calendar_id(http, token)
    cal = world.primary_calendar("alice@example.com").id
    invite = world.insert_event(
        cal,
        start=at(3),
        end=at(4),
        summary="Invite",
        organizer=Person(email="boss@example.com"),
        attendees=[Attendee(email="alice@example.com"), Attendee(email="bob@example.com")],
    )
    await world.clock.advance(3)
    [event] = await read(http, token)
    assert event["participation_status"] == "needs_action"
    url = f"/cronofy/v1/calendars/{cid}/events/{event['event_uid']}/participation_status"
    r = await http.post(url, json={"status": "accepted"}, headers=bearer(token))
    assert (r.status_code, r.content) == (202, b"")
    await world.clock.advance(2)
    responses = {a.email: a.response for a in world.event(cal, invite.id).attendees}
    assert responses == {"alice@example.com": "accepted", "bob@example.com": "needs_action"}
    [event] = await read(http, token)
    assert event["participation_status"] == "accepted"
    r = await http.post(url, json={"status": "maybe"}, headers=bearer(token))
    assert r.status_code == 422

    for n in range(2):
        body = {
            "event_id": f"m{n}",
            "summary": "ours",
            "start": "2026-01-07T10:00:00Z",
            "end": "2026-01-07T11:00:00Z",
        }
        await http.post(f"/cronofy/v1/calendars/{cid}/events", json=body, headers=bearer(token))
    await world.clock.advance(2)
    assert len(world.events(cal)) == 3
    r = await http.request(
        "DELETE", "/cronofy/v1/events", json={"delete_all": True}, headers=bearer(token)
    )
    assert r.status_code == 202
    await world.clock.advance(2)
    assert [e.summary for e in world.events(cal)] == ["Invite"]  # only the app's own events go


async def test_from_is_inclusive_of_end_and_to_exclusive_of_start(
    http: httpx.AsyncClient, world: World
) -> None:
    token = await connect(http)
    cal = world.primary_calendar("alice@example.com").id
    world.insert_event(cal, start=at(1), end=at(2), summary="ends at from")
    world.insert_event(cal, start=at(5), end=at(6), summary="starts at to")
    world.insert_event(cal, start=at(3), end=at(4), summary="inside")
    await world.clock.advance(3)
    got = await read(http, token, **{"from": "2026-01-05T11:00:00Z", "to": "2026-01-05T14:00:00Z"})
    assert [e["summary"] for e in got] == ["ends at from", "inside"]
