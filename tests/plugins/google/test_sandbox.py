"""The Google sandbox in-process: Google's rules, as raw HTTP and through the provider."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest
from calbridge_google.sandbox import create_app, google_sandbox
from calbridge_google.sandbox._app import GoogleSandbox
from calbridge_google.sandbox._params import METHODS
from calbridge_google.testing import HookCapture, sandbox_rig

from calbridge import ChangeKind, EventTime, RetryPolicy
from calbridge import errors as E
from calbridge.sandbox import World, build_app, installed_sandboxes

BASE = "http://sandbox.test/google"
API = f"{BASE}/calendar/v3"
CLIENT, SECRET = "client-1", "secret-1"
EMAIL = "carol@example.com"


@attrs.define
class Env:
    world: World
    google: GoogleSandbox
    http: httpx.AsyncClient
    hooks: HookCapture
    auth: dict[str, str]

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"{API}{path}", params=params, headers=self.auth)

    async def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return await self.http.post(f"{API}{path}", json=body, headers={**self.auth, **headers})

    def native(self, hours: float, summary: str = "n", **kw: Any) -> str:
        start = self.world.clock.now() + dt.timedelta(hours=hours)
        e = self.world.insert_event(
            EMAIL,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary=summary,
            **kw,
        )
        return e.id


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    hooks = HookCapture()
    world = World(transport=httpx.MockTransport(hooks))
    world.add_application(CLIENT, SECRET)
    google = google_sandbox(world)
    token = google.issue_tokens(EMAIL)["access_token"]
    app = build_app(world, {"google": create_app})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        yield Env(world, google, http, hooks, {"Authorization": f"Bearer {token}"})


def reason(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == r.status_code
    return str(body["error"]["errors"][0]["reason"])


def test_parameter_table_matches_the_discovery_document() -> None:
    """The sandbox's parameter table is the bundled calendar v3 discovery document's."""
    import googleapiclient

    path = f"{googleapiclient.__path__[0]}/discovery_cache/documents/calendar.v3.json"
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for method, table in METHODS.items():
        _, resource, name = method.split(".")
        spec = doc["resources"][resource]["methods"][name].get("parameters", {})
        query = {k: v for k, v in spec.items() if v["location"] == "query"}
        assert set(table) == set(query), method
        for key, p in table.items():
            d = query[key]
            assert p.type == d["type"], (method, key)
            assert p.repeated == bool(d.get("repeated")), (method, key)
            assert p.enum == tuple(d.get("enum", ())), (method, key)
            assert p.minimum == (int(d["minimum"]) if "minimum" in d else None), (method, key)
            assert p.fmt == d.get("format") if d.get("format") == "date-time" else True


def test_the_sandbox_is_installed() -> None:
    """``calbridge sandbox serve`` mounts it under /google."""
    assert "google" in installed_sandboxes()


async def test_oauth_consent_pkce_refresh_revoke(env: Env) -> None:
    """Auto-consent creates the user natively; PKCE is checked; refresh omits refresh_token."""
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": CLIENT,
        "redirect_uri": "https://app/cb",
        "response_type": "code",
        "scope": "openid email https://www.googleapis.com/auth/calendar",
        "state": "xyz",
        "access_type": "offline",
        "prompt": "consent",
        "login_hint": "dave@example.com",
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
    }
    r = await env.http.get(f"{BASE}/o/oauth2/v2/auth", params=params)
    assert r.status_code == 302
    q = parse_qs(urlsplit(r.headers["location"]).query)
    assert q["state"] == ["xyz"]
    assert env.world.user("dave@example.com").native == "google"
    assert env.world.primary_calendar("dave@example.com").id == "dave@example.com"
    form = {
        "grant_type": "authorization_code",
        "code": q["code"][0],
        "client_id": CLIENT,
        "client_secret": SECRET,
        "redirect_uri": "https://app/cb",
    }
    bad = await env.http.post(f"{BASE}/token", data={**form, "code_verifier": "w" * 50})
    assert bad.json()["error"] == "invalid_grant"
    r = await env.http.get(f"{BASE}/o/oauth2/v2/auth", params=params)
    form["code"] = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
    ok = await env.http.post(f"{BASE}/token", data={**form, "code_verifier": verifier})
    tokens = ok.json()
    assert {"access_token", "refresh_token", "expires_in", "id_token"} <= set(tokens)
    again = await env.http.post(f"{BASE}/token", data={**form, "code_verifier": verifier})
    assert again.json()["error"] == "invalid_grant"
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": tokens["refresh_token"],
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    refreshed = (await env.http.post(f"{BASE}/token", data=refresh)).json()
    assert "refresh_token" not in refreshed
    assert (
        await env.http.post(f"{BASE}/revoke", data={"token": tokens["refresh_token"]})
    ).is_success
    gone = await env.http.post(f"{BASE}/token", data=refresh)
    assert gone.json()["error"] == "invalid_grant"
    wrong = await env.http.post(f"{BASE}/token", data={**refresh, "client_secret": "nope"})
    assert wrong.status_code == 401
    no_hint = {k: v for k, v in params.items() if k != "login_hint"}
    assert (await env.http.get(f"{BASE}/o/oauth2/v2/auth", params=no_hint)).status_code == 400


async def test_auth_errors(env: Env) -> None:
    """No or unknown bearer token: 401 authError with WWW-Authenticate."""
    r = await env.http.get(f"{API}/users/me/calendarList")
    assert r.status_code == 401
    assert reason(r) == "authError"
    assert "invalid_token" in r.headers["www-authenticate"]
    assert (await env.get("/calendars/someone@else.com/events")).status_code == 404


async def test_max_results_default_and_cap(env: Env) -> None:
    """maxResults defaults to 250, is capped at 2500, and must be at least 1."""
    for n in range(260):
        env.native(1 + n / 100)
    page = (await env.get("/calendars/primary/events")).json()
    assert len(page["items"]) == 250
    assert "nextPageToken" in page
    assert "nextSyncToken" not in page
    assert len((await env.get("/calendars/primary/events", maxResults=9999)).json()["items"]) == 260
    assert reason(await env.get("/calendars/primary/events", maxResults=0)) == "invalidParameter"
    assert reason(await env.get("/calendars/primary/events", singleEvents="yes")) == (
        "invalidParameter"
    )


async def test_sync_token_rules(env: Env) -> None:
    """Incompatible parameters, showDeleted=false and other restrictions are 400; expiry 410."""
    token = (await env.get("/calendars/primary/events")).json()["nextSyncToken"]
    for name, value in [
        ("timeMin", "2026-01-01T00:00:00Z"),
        ("timeMax", "2026-01-01T00:00:00Z"),
        ("q", "x"),
        ("iCalUID", "x"),
        ("orderBy", "updated"),
        ("updatedMin", "2026-01-05T00:00:00Z"),
        ("privateExtendedProperty", "a=b"),
        ("sharedExtendedProperty", "a=b"),
    ]:
        r = await env.get("/calendars/primary/events", syncToken=token, **{name: value})
        assert r.status_code == 400, name
    r = await env.get("/calendars/primary/events", syncToken=token, showDeleted="false")
    assert r.status_code == 400
    r = await env.get("/calendars/primary/events", syncToken=token, singleEvents="true")
    assert r.status_code == 400
    assert (await env.get("/calendars/primary/events", syncToken=token)).status_code == 200
    env.google.expire_sync_tokens()
    r = await env.get("/calendars/primary/events", syncToken=token)
    assert r.status_code == 410
    assert reason(r) == "fullSyncRequired"
    assert r.json()["error"]["errors"][0]["location"] == "syncToken"
    assert (await env.get("/calendars/primary/events", syncToken="garbage")).status_code == 410
    old = "2025-01-01T00:00:00Z"
    assert reason(await env.get("/calendars/primary/events", updatedMin=old)) == (
        "updatedMinTooLongAgo"
    )


async def test_paging_is_stable_under_concurrent_writes(env: Env) -> None:
    """Writes while paging hide nothing unchanged; they come in the next delta."""
    ids = [env.native(n + 1) for n in range(6)]
    first = (await env.get("/calendars/primary/events", maxResults=2)).json()
    env.world.update_event(EMAIL, ids[0], summary="changed")
    env.world.delete_event(EMAIL, ids[3])
    seen = [i["id"] for i in first["items"]]
    page = first
    while "nextPageToken" in page:
        page = (
            await env.get(
                "/calendars/primary/events", maxResults=2, pageToken=page["nextPageToken"]
            )
        ).json()
        seen += [i["id"] for i in page["items"]]
    assert set(ids) - {ids[3]} <= set(seen)
    delta = (await env.get("/calendars/primary/events", syncToken=page["nextSyncToken"])).json()
    assert {i["id"]: i["status"] for i in delta["items"]} == {
        ids[0]: "confirmed",
        ids[3]: "cancelled",
    }
    other = await env.get(
        "/calendars/primary/events", maxResults=3, pageToken=first["nextPageToken"]
    )
    assert other.status_code == 400


async def test_tombstones_follow_googles_rules(env: Env) -> None:
    """A deleted instance lists as a cancelled exception; a deleted series as id-only."""
    start = env.world.clock.now() + dt.timedelta(days=1)
    master = env.world.insert_event(
        EMAIL,
        start=EventTime.zoned(start, "Europe/Paris"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "Europe/Paris"),
        summary="series",
        recurrence=["RRULE:FREQ=DAILY;COUNT=3"],
    )
    token = (await env.get("/calendars/primary/events")).json()["nextSyncToken"]
    inst = (await env.get(f"/calendars/primary/events/{master.id}/instances")).json()["items"]
    r = await env.http.delete(f"{API}/calendars/primary/events/{inst[1]['id']}", headers=env.auth)
    assert r.status_code == 204
    listed = (await env.get("/calendars/primary/events")).json()["items"]
    cancelled = [i for i in listed if i["status"] == "cancelled"]
    assert [set(c) for c in cancelled] == [
        {"kind", "etag", "id", "status", "recurringEventId", "originalStartTime"}
    ]
    expanded = (await env.get("/calendars/primary/events", singleEvents="true")).json()["items"]
    assert len(expanded) == 2
    r = await env.http.delete(f"{API}/calendars/primary/events/{master.id}", headers=env.auth)
    assert r.status_code == 204
    delta = (await env.get("/calendars/primary/events", syncToken=token)).json()["items"]
    assert all(set(i) == {"kind", "etag", "id", "status"} for i in delta)
    assert {i["id"] for i in delta} == {master.id, inst[1]["id"]}


async def test_writes_validate_like_google(env: Env) -> None:
    """Series need a start zone, no DTSTART; ids are base32hex; read-only calendars refuse."""
    when = {
        "start": {"dateTime": "2026-01-06T09:00:00Z"},
        "end": {"dateTime": "2026-01-06T10:00:00Z"},
    }
    r = await env.post("/calendars/primary/events", {**when, "recurrence": ["RRULE:FREQ=DAILY"]})
    assert (r.status_code, reason(r)) == (400, "required")
    r = await env.post(
        "/calendars/primary/events", {**when, "recurrence": ["DTSTART:20260106T090000Z"]}
    )
    assert r.status_code == 400
    assert (
        await env.post("/calendars/primary/events", {**when, "id": "UPPER_case"})
    ).status_code == 400
    ok = await env.post("/calendars/primary/events", {**when, "id": "abc00"})
    etag = ok.json()["etag"]
    await env.http.delete(f"{API}/calendars/primary/events/abc00", headers=env.auth)
    r = await env.post("/calendars/primary/events", {**when, "id": "abc00"})
    assert (r.status_code, reason(r)) == (409, "duplicate")
    later = {
        "start": {"dateTime": "2026-01-06T11:00:00Z"},
        "end": {"dateTime": "2026-01-06T10:00:00Z"},
    }
    assert reason(await env.post("/calendars/primary/events", later)) == "timeRangeEmpty"
    ok2 = (await env.post("/calendars/primary/events", when)).json()
    stale = await env.http.put(
        f"{API}/calendars/primary/events/{ok2['id']}",
        json=when,
        headers={**env.auth, "If-Match": etag},
    )
    assert (stale.status_code, reason(stale)) == (412, "conditionNotMet")
    ro = env.world.add_calendar(EMAIL, "Holidays", read_only=True)
    r = await env.post(f"/calendars/{ro.id}/events", when)
    assert r.status_code == 403


async def test_watch_channels_expire_after_seven_days(env: Env) -> None:
    """Expiration is capped at 7 days on the sandbox clock; after it, no notifications."""
    asked = int((env.world.clock.timestamp() + 30 * 86400) * 1000)
    r = await env.post(
        "/calendars/primary/events/watch",
        {
            "id": "ch-1",
            "type": "web_hook",
            "address": "https://hooks/x",
            "token": "t",
            "expiration": str(asked),
        },
    )
    ch = r.json()
    assert int(ch["expiration"]) == int((env.world.clock.timestamp() + 7 * 86400) * 1000)
    dup = await env.post(
        "/calendars/primary/events/watch",
        {"id": "ch-1", "type": "web_hook", "address": "https://hooks/x"},
    )
    assert dup.status_code == 400
    gone = env.native(2)
    env.world.delete_event(EMAIL, gone)
    await env.world.clock.run_due()
    got = env.hooks.for_channel("ch-1")
    assert [h.headers["x-goog-resource-state"] for h in got] == ["sync", "exists", "not_exists"]
    assert [h.headers["x-goog-message-number"] for h in got] == ["1", "2", "3"]
    assert got[0].headers["x-goog-channel-expiration"].endswith("GMT")
    stop = await env.post("/channels/stop", {"id": "ch-1", "resourceId": "wrong"})
    assert stop.status_code == 404
    await env.world.clock.advance(7 * 86400 + 1)
    env.native(3)
    await env.world.clock.run_due()
    assert len(env.hooks.for_channel("ch-1")) == 3


async def test_provider_resyncs_after_410_without_duplicates() -> None:
    """Cursor expired: SyncCursorExpired, then a full read with deletions applied."""
    async with sandbox_rig(page_size=2) as rig:
        p, s, cal = rig.provider, rig.session, rig.calendar_id
        ids = [
            rig.world.insert_event(
                cal,
                start=EventTime.zoned(rig.now() + dt.timedelta(hours=h), "UTC"),
                end=EventTime.zoned(rig.now() + dt.timedelta(hours=h, minutes=30), "UTC"),
            ).id
            for h in range(1, 6)
        ]
        cursor = [pg async for pg in p.changes(s, cal, None)][-1].cursor
        rig.world.delete_event(cal, ids[0])
        google_sandbox(rig.world).expire_sync_tokens(cal)
        with pytest.raises(E.SyncCursorExpired):
            async for _ in p.changes(s, cal, cursor):
                pass
        pages = [pg async for pg in p.changes(s, cal, None)]
        assert all(pg.full for pg in pages)
        live = [c.event_id for pg in pages for c in pg.changes if c.kind is ChangeKind.UPSERTED]
        assert sorted(live) == sorted(ids[1:])
        assert len(live) == len(set(live))


async def test_provider_rides_out_rate_limits_and_token_expiry() -> None:
    """Injected 403 rate limits are retried; an expired access token is refreshed once."""
    async with sandbox_rig() as rig:
        rig.provider.google.sleep = _no_sleep
        rig.provider.google.policy = RetryPolicy(attempts=4, initial_backoff=0.0)
        google = google_sandbox(rig.world)
        google.fail_next(403, reason="quotaExceeded", times=2)
        assert await rig.provider.list_calendars(rig.session)
        rig.world.faults.trigger("google", "expire_tokens", rig.email)
        assert await rig.provider.list_calendars(rig.session)
        assert rig.session.tokens.refreshes == 1  # type: ignore[attr-defined]
        google.fail_next(403, reason="forbidden")
        with pytest.raises(E.ProviderError):
            await rig.provider.list_calendars(rig.session)
        rig.world.faults.trigger("google", "revoke_tokens", rig.email)
        rig.world.faults.trigger("google", "expire_tokens", rig.email)
        with pytest.raises(E.ReauthRequired):
            await rig.provider.list_calendars(rig.session)


async def _no_sleep(_s: float) -> None:
    return None
