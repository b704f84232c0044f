"""The Google provider against scripted responses (httpx.MockTransport): wire details."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from calbridge_google import GoogleProvider, client_event_id, make_change_source

import calbridge
from calbridge import (
    Account,
    AuthorizationRequest,
    ChangeKind,
    Channel,
    ChannelRequest,
    EventDraft,
    EventTime,
    NotificationKind,
    ProviderSettings,
    RetryPolicy,
    SeriesRole,
    Session,
    StaticTokenSource,
    TimeRange,
    TokenSet,
    WebhookRequest,
)
from calbridge import errors as E

Handler = Callable[[httpx.Request], httpx.Response]
API = "https://www.googleapis.com/calendar/v3"


def gerr(status: int, reason: str, domain: str = "global", message: str = "x") -> httpx.Response:
    body = {
        "error": {
            "errors": [{"domain": domain, "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    return httpx.Response(status, json=body)


class Recorder:
    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nxt = self.responses.pop(0)
        return nxt(request) if callable(nxt) else nxt

    def query(self, i: int) -> dict[str, list[str]]:
        return parse_qs(urlsplit(str(self.requests[i].url)).query)


async def _no_sleep(_s: float) -> None:
    return None


def make(rec: Recorder, **options: object) -> GoogleProvider:
    provider = GoogleProvider(
        http=httpx.AsyncClient(transport=httpx.MockTransport(rec)),
        settings=ProviderSettings(client_id="cid", client_secret="shh", options=options),
    )
    provider.google.sleep = _no_sleep
    provider.google.policy = RetryPolicy(attempts=4, initial_backoff=0.0)
    return provider


def session() -> Session:
    """A session whose refresh yields the access token ``fresh``."""

    async def refresh(stale: TokenSet) -> TokenSet:
        return TokenSet(access_token="fresh", refresh_token="rt")

    return Session(
        account=Account(app_user_id="u", provider="google", provider_account_id="sub1", id="a1"),
        tokens=StaticTokenSource(TokenSet(access_token="at", refresh_token="rt"), refresh),
    )


WINDOW = TimeRange(
    start=dt.datetime(2026, 3, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 3, 8, tzinfo=dt.UTC)
)
EV = {
    "kind": "calendar#event",
    "id": "abc123",
    "etag": '"1"',
    "status": "confirmed",
    "summary": "Hi",
    "iCalUID": "abc123@google.com",
    "start": {"dateTime": "2026-03-02T10:00:00+01:00", "timeZone": "Europe/Paris"},
    "end": {"dateTime": "2026-03-02T11:00:00+01:00", "timeZone": "Europe/Paris"},
    "extendedProperties": {"private": {"app": "42"}},
}


def test_authorization_url_has_offline_consent_pkce_and_state() -> None:
    """The consent URL asks for offline access, forces consent, and carries PKCE and state."""
    url = make(Recorder()).authorization_url(
        AuthorizationRequest(
            redirect_uri="https://app/cb", state="st", code_challenge="chal", login_hint="a@b"
        )
    )
    q = parse_qs(urlsplit(url).query)
    assert url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert q["access_type"] == ["offline"]
    assert q["prompt"] == ["consent"]
    assert q["code_challenge_method"] == ["S256"]
    assert q["code_challenge"] == ["chal"]
    assert q["state"] == ["st"]
    assert q["login_hint"] == ["a@b"]
    assert "https://www.googleapis.com/auth/calendar" in q["scope"][0].split()


async def test_exchange_reads_the_id_token_and_refresh_keeps_the_refresh_token() -> None:
    """The grant's account is the id_token's sub; a refresh without refresh_token keeps it."""
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "1234", "email": "a@b.c"}).encode())
    id_token = "e30." + claims.decode().rstrip("=") + ".sig"
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "access_token": "A1",
                "refresh_token": "R1",
                "expires_in": 3599,
                "token_type": "Bearer",
                "scope": "openid email",
                "id_token": id_token,
            },
        ),
        httpx.Response(200, json={"access_token": "A2", "expires_in": 3599}),
        httpx.Response(400, json={"error": "invalid_grant"}),
    )
    p = make(rec)
    got = await p.exchange_code(code="c", redirect_uri="https://app/cb", code_verifier="v")
    form = parse_qs(rec.requests[0].content.decode())
    assert form["grant_type"] == ["authorization_code"]
    assert form["code_verifier"] == ["v"]
    assert got.provider_account_id == "1234"
    assert got.email == "a@b.c"
    refreshed = await p.refresh_tokens(got.tokens)
    assert refreshed.access_token.reveal() == "A2"
    assert refreshed.refresh_token is not None
    assert refreshed.refresh_token.reveal() == "R1"
    with pytest.raises(E.ReauthRequired):
        await p.refresh_tokens(refreshed)


async def test_list_calendars_follows_pages() -> None:
    """calendarList.list is read to the last page."""
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "items": [{"id": "a@b.c", "summary": "A", "primary": True, "accessRole": "owner"}],
                "nextPageToken": "p2",
            },
        ),
        httpx.Response(
            200, json={"items": [{"id": "x@group", "summary": "X", "accessRole": "reader"}]}
        ),
    )
    cals = await make(rec).list_calendars(session())
    assert [(c.id, c.primary, c.read_only) for c in cals] == [
        ("a@b.c", True, False),
        ("x@group", False, True),
    ]
    assert rec.query(1)["pageToken"] == ["p2"]


async def test_list_events_sends_the_window_expanded() -> None:
    """Window reads expand series and bound timeMin/timeMax; cancelled instances are dropped."""
    cancelled = {
        "id": "m_20260303T090000Z",
        "status": "cancelled",
        "recurringEventId": "m",
        "originalStartTime": {"dateTime": "2026-03-03T09:00:00Z"},
    }
    rec = Recorder(httpx.Response(200, json={"items": [EV, cancelled]}))
    pages = [p async for p in make(rec).list_events(session(), "primary", WINDOW, page_size=7)]
    q = rec.query(0)
    assert q["singleEvents"] == ["true"]
    assert q["timeMin"] == ["2026-03-01T00:00:00Z"]
    assert q["timeMax"] == ["2026-03-08T00:00:00Z"]
    assert q["maxResults"] == ["7"]
    (event,) = pages[0]
    assert event.start.tzid == "Europe/Paris"
    assert event.properties == {"app": "42"}


async def test_changes_keeps_parameters_and_takes_the_cursor_from_the_last_page() -> None:
    """Incremental pages repeat the syncToken; only the last page's nextSyncToken is the cursor."""
    exception = {
        "id": "m_1",
        "status": "cancelled",
        "recurringEventId": "m",
        "originalStartTime": {"dateTime": "2026-03-03T09:00:00Z"},
    }
    rec = Recorder(
        httpx.Response(200, json={"items": [EV], "nextPageToken": "P"}),
        httpx.Response(
            200,
            json={
                "items": [{"id": "gone", "status": "cancelled"}, exception],
                "nextSyncToken": "S2",
            },
        ),
    )
    pages = [p async for p in make(rec).changes(session(), "primary", "S1")]
    assert [p.cursor for p in pages] == [None, "S2"]
    first, second = rec.query(0), rec.query(1)
    assert first["syncToken"] == second["syncToken"] == ["S1"]
    assert second["pageToken"] == ["P"]
    assert first == {k: v for k, v in second.items() if k != "pageToken"}
    assert "timeMin" not in first
    kinds = [(c.kind, c.event_id) for c in pages[1].changes]
    assert kinds == [(ChangeKind.DELETED, "gone"), (ChangeKind.UPSERTED, "m_1")]
    exc = pages[1].changes[1].event
    assert exc is not None
    assert exc.series_role is SeriesRole.EXCEPTION
    assert exc.status.value == "cancelled"


async def test_410_by_status_alone_expires_the_cursor() -> None:
    """A 410 without the fullSyncRequired reason still means: resync in full."""
    rec = Recorder(httpx.Response(410, json={"error": {"code": 410, "message": "Gone"}}))
    with pytest.raises(E.SyncCursorExpired):
        async for _ in make(rec).changes(session(), "primary", "old"):
            pass


async def test_create_uses_a_client_id_and_treats_409_as_done() -> None:
    """The id comes from the key; a 409 on retry returns the existing event."""
    rec = Recorder(gerr(409, "duplicate"), httpx.Response(200, json=EV))
    draft = EventDraft(
        start=EventTime.zoned(dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), "Europe/Paris"),
        end=EventTime.zoned(dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC), "Europe/Paris"),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=3",),
    )
    got = await make(rec).create_event(session(), "primary", draft, idempotency_key="k1")
    body = json.loads(rec.requests[0].content)
    eid = client_event_id("k1")
    assert body["id"] == eid
    assert set(eid) <= set("0123456789abcdefghijklmnopqrstuv")
    assert 5 <= len(eid) <= 1024
    assert body["start"]["timeZone"] == "Europe/Paris"
    assert body["end"]["timeZone"] == "Europe/Paris"
    assert body["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=3"]
    assert rec.requests[1].method == "GET"
    assert rec.requests[1].url.path.endswith(f"/events/{eid}")
    assert got.id == "abc123"


async def test_update_sends_if_match_and_412_is_a_conflict() -> None:
    """A stale etag is a Conflict."""
    rec = Recorder(gerr(412, "conditionNotMet"))
    draft = EventDraft(
        start=EventTime.all_day(dt.date(2026, 3, 2)), end=EventTime.all_day(dt.date(2026, 3, 3))
    )
    with pytest.raises(E.Conflict):
        await make(rec).update_event(session(), "primary", "abc123", draft, etag='"1"')
    assert rec.requests[0].headers["if-match"] == '"1"'
    assert rec.requests[0].method == "PUT"


async def test_delete_410_is_success_and_404_is_not_found() -> None:
    """Deleting an already-deleted event succeeds."""
    rec = Recorder(gerr(410, "deleted"), gerr(404, "notFound"))
    p = make(rec)
    await p.delete_event(session(), "primary", "abc")
    with pytest.raises(E.NotFound):
        await p.delete_event(session(), "nope", "abc")


@pytest.mark.parametrize("reason", ["rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"])
async def test_403_usage_limits_are_retried(reason: str) -> None:
    """403 usageLimits reasons are retried; the call then succeeds."""
    rec = Recorder(gerr(403, reason, "usageLimits"), httpx.Response(200, json={"items": []}))
    assert await make(rec).list_calendars(session()) == []
    assert len(rec.requests) == 2


async def test_other_403_is_not_retried_and_429_is() -> None:
    """403 forbidden fails at once; 429 and 500 are retried; persistent 403 rate limits surface."""
    rec = Recorder(gerr(403, "forbiddenForNonOrganizer", "calendar"))
    with pytest.raises(E.ProviderError) as info:
        await make(rec).list_calendars(session())
    assert not isinstance(info.value, E.RateLimited)
    assert len(rec.requests) == 1
    rec = Recorder(
        gerr(429, "rateLimitExceeded", "usageLimits"),
        gerr(500, "backendError"),
        httpx.Response(200, json={"items": []}),
    )
    assert await make(rec).list_calendars(session()) == []
    assert len(rec.requests) == 3
    rec = Recorder(*[gerr(403, "rateLimitExceeded", "usageLimits") for _ in range(4)])
    with pytest.raises(E.RateLimited):
        await make(rec).list_calendars(session())


async def test_401_refreshes_once() -> None:
    """A 401 refreshes the session's tokens once and retries with the new token."""
    rec = Recorder(
        gerr(401, "authError"),
        httpx.Response(200, json={"items": []}),
        gerr(401, "authError"),
        gerr(401, "authError"),
    )
    p, s = make(rec), session()
    await p.list_calendars(s)
    assert rec.requests[1].headers["authorization"] == "Bearer fresh"
    with pytest.raises(E.ReauthRequired):
        await p.list_calendars(s)


async def test_free_busy() -> None:
    """freebusy.query blocks come back per calendar."""
    rec = Recorder(
        httpx.Response(
            200,
            json={
                "calendars": {
                    "primary": {
                        "busy": [{"start": "2026-03-02T09:00:00Z", "end": "2026-03-02T10:00:00Z"}]
                    }
                }
            },
        )
    )
    (block,) = await make(rec).free_busy(session(), ["primary"], WINDOW)
    assert block.start == dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
    assert json.loads(rec.requests[0].content)["items"] == [{"id": "primary"}]


def _watch_reply(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "kind": "api#channel",
            "id": body["id"],
            "resourceId": "R",
            "resourceUri": "u",
            "token": body["token"],
            "expiration": body["expiration"],
        },
    )


async def test_watch_renew_and_verify() -> None:
    """Renewal opens an overlapping channel then stops the old; notifications verify strictly."""
    rec = Recorder(_watch_reply, _watch_reply, httpx.Response(204))
    p = make(rec)
    ch = await p.subscribe(
        session(), ChannelRequest(callback_url="https://app/hook", ttl_seconds=10**9)
    )
    watch = json.loads(rec.requests[0].content)
    assert watch["type"] == "web_hook"
    assert watch["token"]
    assert ch.expires_at is not None
    assert ch.expires_at - p.clock() <= 7 * 24 * 3600 + 1
    assert "token" not in ch.raw
    new = await p.renew(session(), ch)
    assert new.id != ch.id
    assert new.secret != ch.secret
    assert [r.url.path.rsplit("/", 2)[-2:] for r in rec.requests] == [
        ["events", "watch"],
        ["events", "watch"],
        ["channels", "stop"],
    ]
    assert json.loads(rec.requests[2].content) == {"id": ch.id, "resourceId": "R"}

    async def lookup(channel_id: str) -> Channel | None:
        return new if channel_id == new.id else None

    secret = new.secret
    assert secret is not None

    def req(state: str, n: int, **over: str) -> WebhookRequest:
        h = {
            "X-Goog-Channel-ID": new.id,
            "X-Goog-Channel-Token": secret.reveal(),
            "X-Goog-Resource-ID": "R",
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(n),
            "X-Goog-Resource-URI": "u",
        }
        h.update(over)
        return WebhookRequest.build(headers=h, body=b"")

    (sync,) = await p.verify_notification(req("sync", 1), lookup)
    assert sync.kind is NotificationKind.SYNC
    (change,) = await p.verify_notification(req("exists", 2), lookup)
    assert change.kind is NotificationKind.CHANGE
    assert change.delivery_key == f"google:{new.id}:2"
    assert change.account_id == "a1"
    (gone,) = await p.verify_notification(req("not_exists", 3), lookup)
    assert gone.kind is NotificationKind.CHANGE
    for bad in (
        req("exists", 4, **{"X-Goog-Channel-Token": "wrong"}),
        req("exists", 4, **{"X-Goog-Resource-ID": "other"}),
        req("exists", 4, **{"X-Goog-Channel-ID": ch.id}),
        WebhookRequest.build(headers={}, body=b""),
    ):
        with pytest.raises(E.NotificationRejected):
            await p.verify_notification(bad, lookup)


def test_change_source_is_push_with_a_callback_only() -> None:
    """Push when a callback URL is configured; otherwise let polling answer."""
    p = make(Recorder())
    assert make_change_source(provider=p, callback_url="https://x/h") == calbridge.ChangeSource(
        kind="push", reason="google events.watch channels"
    )
    assert make_change_source(provider=p, callback_url=None) is None


async def test_a_timed_out_insert_is_retried_with_the_same_id() -> None:
    """A read timeout after the insert reached Google: the retry reuses the id; 409 = done."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    rec = Recorder(timeout, gerr(409, "duplicate"), httpx.Response(200, json=EV))
    draft = EventDraft(
        start=EventTime.all_day(dt.date(2026, 3, 2)), end=EventTime.all_day(dt.date(2026, 3, 3))
    )
    got = await make(rec).create_event(session(), "primary", draft, idempotency_key="k2")
    posts = [json.loads(r.content)["id"] for r in rec.requests if r.method == "POST"]
    assert posts == [client_event_id("k2")] * 2
    assert got.id == "abc123"


async def test_revoke_treats_an_already_revoked_token_as_done() -> None:
    """Revoke posts the refresh token; 400 invalid_token means it was already revoked."""
    rec = Recorder(
        httpx.Response(200, json={}), httpx.Response(400, json={"error": "invalid_token"})
    )
    p = make(rec)
    tokens = TokenSet(access_token="at", refresh_token="rt")
    await p.revoke_tokens(tokens)
    await p.revoke_tokens(tokens)
    assert parse_qs(rec.requests[0].content.decode()) == {"token": ["rt"]}
    assert rec.requests[0].url == "https://oauth2.googleapis.com/revoke"


def test_the_plugin_registers_the_provider_and_its_sandbox() -> None:
    """Built-in loading registers ``google`` and the ``/google`` sandbox."""
    from calbridge.testing import fresh_plugin_host

    host = fresh_plugin_host()
    assert host.provider_class("google") is GoogleProvider
    assert "google" in host.sandbox_factories()
    assert host.make_change_source(make(Recorder()), "https://x/h").kind == "push"
