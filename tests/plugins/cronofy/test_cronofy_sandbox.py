"""The Cronofy plugin against the Cronofy sandbox: what the contract does not cover.

Each test runs over real loopback HTTP and in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import AsyncIterator

import pytest
from calbridge_cronofy import (
    AccountLocked,
    CronofyProvider,
    PaymentRequired,
    ServiceAccountAuthorization,
)
from calbridge_cronofy.testing import SANDBOX_CLIENT_ID, CronofySandboxRig, sandbox_rig

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotificationRejected,
    RateLimited,
    ReauthRequired,
    Unavailable,
)


@pytest.fixture(params=["in-process", "loopback"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[CronofySandboxRig]:
    async with sandbox_rig(
        loopback=request.param == "loopback",
        page_size=4,
        options={"retry": calbridge.RetryPolicy(attempts=3, initial_backoff=0.01)},
    ) as r:
        yield r


def _draft(start: dt.datetime, summary: str) -> calbridge.EventDraft:
    return calbridge.EventDraft(
        summary=summary,
        start=calbridge.EventTime.zoned(start, "UTC"),
        end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )


def _window(rig: CronofySandboxRig, days: int = 5) -> calbridge.TimeRange:
    start = rig.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return calbridge.TimeRange(start=start, end=start + dt.timedelta(days=days))


async def _all(rig: CronofySandboxRig) -> list[calbridge.Event]:
    out: list[calbridge.Event] = []
    async for page in rig.provider.list_events(rig.session, rig.calendar_id, _window(rig)):
        out.extend(page)
    return out


async def _fault(rig: CronofySandboxRig, **body: object) -> None:
    response = await rig.control.post("/_sandbox/faults/cronofy", json=body)
    response.raise_for_status()


async def test_identity_and_calendars(rig: CronofySandboxRig) -> None:
    info = await rig.provider.userinfo(rig.session)
    assert info.email == rig.email
    assert info.sub == rig.session.account.provider_account_id
    assert info.cronofy_data is not None
    (profile,) = info.cronofy_data.profiles
    assert profile.profile_connected
    assert rig.calendar_id in {c.calendar_id for c in profile.profile_calendars}
    profiles = await rig.provider.list_profiles(rig.session)
    assert [p.profile_id for p in profiles] == [profile.profile_id]
    tokens = await rig.session.access_token()
    assert tokens.extra["linking_profile.profile_id"] == profile.profile_id

    new = await rig.provider.create_calendar(rig.session, profile.profile_id, "Bookings")
    assert new.name == "Bookings"
    assert new.id in {c.id for c in await rig.provider.list_calendars(rig.session)}
    with pytest.raises(InvalidRequest) as err:
        await rig.provider.create_calendar(rig.session, "pro_unknown", "X")
    assert "profile_id" in err.value.field_errors


async def test_external_events_by_event_uid(rig: CronofySandboxRig) -> None:
    start = rig.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    await rig.insert_native_event("dentist", start)
    await rig.settle()
    (ext,) = [e for e in await _all(rig) if e.summary == "dentist"]
    assert ext.id.startswith("evt_external_")
    assert ext.ical_uid
    native = rig.world.find_by_ical_uid(rig.native_calendar_id, ext.ical_uid)
    assert [n.id for n in native] == [ext.raw["google_event_id"]]
    assert "event_id" not in ext.raw

    await rig.provider.update_event(rig.session, rig.calendar_id, ext.id, _draft(start, "dentist!"))
    await rig.settle()
    (moved,) = [e for e in await _all(rig) if e.id == ext.id]
    assert moved.summary == "dentist!"

    await rig.provider.change_participation_status(
        rig.session, rig.calendar_id, ext.id, calbridge.ResponseStatus.DECLINED
    )
    await rig.provider.delete_event(rig.session, rig.calendar_id, ext.id)
    await rig.settle()
    assert ext.id not in {e.id for e in await _all(rig)}


async def test_managed_events_keep_the_callers_id(rig: CronofySandboxRig) -> None:
    start = rig.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=30)
    created = await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(start, "mine"), idempotency_key="booking-42"
    )
    assert created.id == "booking-42"
    await rig.settle()
    (read,) = [e for e in await _all(rig) if e.summary == "mine"]
    assert read.id == "booking-42"
    assert read.raw["event_id"] == "booking-42"
    assert read.raw["event_uid"].startswith("evt_")

    blocks = await rig.provider.free_busy(rig.session, [rig.calendar_id], _window(rig))
    assert any(b.start == start and b.status is calbridge.FreeBusyStatus.BUSY for b in blocks)


async def test_push_end_to_end(rig: CronofySandboxRig) -> None:
    channel = await rig.provider.subscribe(
        rig.session,
        calbridge.ChannelRequest(callback_url=rig.callback_url, calendar_ids=(rig.calendar_id,)),
    )
    again = await rig.provider.subscribe(
        rig.session,
        calbridge.ChannelRequest(callback_url=rig.callback_url, calendar_ids=(rig.calendar_id,)),
    )
    assert again.id == channel.id
    assert [c.id for c in await rig.provider.list_channels(rig.session)] == [channel.id]

    async def lookup(channel_id: str) -> calbridge.Channel | None:
        return channel if channel_id == channel.id else None

    # a full read first, then the app's own write: no notification for it
    cursor = None
    async for page in rig.provider.changes(rig.session, rig.calendar_id, None):
        cursor = page.cursor or cursor
    assert cursor is not None
    await rig.settle()
    (verification,) = rig.captured(channel.id, "verification")
    (note,) = await rig.provider.verify_notification(verification, lookup)
    assert note.kind is calbridge.NotificationKind.VERIFICATION
    start = rig.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(days=2)
    await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(start, "own"), idempotency_key="own-1"
    )
    await rig.settle()
    assert rig.captured(channel.id, "change") == []

    # a change behind the app's back is pushed, signed, and readable from changes_since
    await rig.insert_native_event("pushed", start + dt.timedelta(hours=3))
    await rig.settle()
    (change,) = rig.captured(channel.id, "change")
    (note,) = await rig.provider.verify_notification(change, lookup)
    assert note.kind is calbridge.NotificationKind.CHANGE
    assert note.changes_since
    assert note.calendar_ids == (rig.calendar_id,)
    seen = []
    async for page in rig.provider.changes(rig.session, rig.calendar_id, note.changes_since):
        seen += [c.event.summary for c in page.changes if c.event is not None]
    assert "pushed" in seen
    assert "own" not in seen  # modified before changes_since

    forged = calbridge.WebhookRequest.build(
        headers=dict(change.headers),
        body=json.dumps(json.loads(change.body), indent=2).encode(),
    )
    with pytest.raises(NotificationRejected):
        await rig.provider.verify_notification(forged, lookup)

    await _fault(rig, action="disconnect_profile", email=rig.email)
    await rig.settle()
    kinds = []
    for request in rig.captured(channel.id):
        (n,) = await rig.provider.verify_notification(request, lookup)
        kinds.append(n.kind)
    assert calbridge.NotificationKind.PROFILE_DISCONNECTED in kinds
    profiles = await rig.provider.list_profiles(rig.session)
    assert not profiles[0].profile_connected
    assert profiles[0].profile_relink_url

    await rig.provider.unsubscribe(rig.session, channel)
    await rig.provider.unsubscribe(rig.session, channel)
    assert await rig.provider.list_channels(rig.session) == []


async def test_expired_token_is_refreshed_once(rig: CronofySandboxRig) -> None:
    before = await rig.session.access_token()
    await _fault(rig, action="expire_tokens", email=rig.email)
    assert await rig.provider.list_calendars(rig.session)
    after = await rig.session.access_token()
    assert after.access_token != before.access_token
    assert rig.session.tokens.refreshes == 1  # type: ignore[attr-defined]


async def test_revoked_authorization_needs_reauth(rig: CronofySandboxRig) -> None:
    tokens = await rig.session.access_token()
    await rig.provider.revoke_tokens(tokens)
    with pytest.raises(ReauthRequired):
        await rig.provider.list_calendars(rig.session)


async def test_injected_faults(rig: CronofySandboxRig) -> None:
    await _fault(rig, status=503, times=1, path_prefix="/v1/calendars")
    assert await rig.provider.list_calendars(rig.session)  # retried
    await _fault(rig, status=429, times=1, path_prefix="/v1/calendars")
    assert await rig.provider.list_calendars(rig.session)  # retried
    await _fault(rig, status=500, times=5, path_prefix="/v1/calendars")
    with pytest.raises(Unavailable):
        await rig.provider.list_calendars(rig.session)


async def test_locked_and_unpaid_answers(rig: CronofySandboxRig) -> None:
    await _fault(rig, status=423, times=1, path_prefix="/v1/calendars")
    with pytest.raises(AccountLocked):
        await rig.provider.list_calendars(rig.session)
    await _fault(rig, status=402, times=1, path_prefix="/v1/channels")
    with pytest.raises(PaymentRequired):
        await rig.provider.list_channels(rig.session)


async def test_client_limiter_keeps_under_the_sandbox_limit() -> None:
    """60 calls in a burst: the sandbox (50/s) throttles a client without the limiter;
    with Cronofy's documented limits enforced client-side every call succeeds."""
    async with sandbox_rig(
        loopback=False,
        sandbox_rate_limits=((50, 1.0), (500, 60.0)),
        options={
            "rate_limit_per_second": 0,
            "rate_limit_per_minute": 0,
            "retry": calbridge.RetryPolicy(attempts=1),
        },
    ) as rig:
        done = 0
        throttled = False
        for _ in range(60):
            try:
                await rig.provider.list_profiles(rig.session)
            except RateLimited:
                throttled = True
                break
            done += 1
        assert throttled
        assert 45 <= done <= 50
    async with sandbox_rig(
        loopback=False,
        sandbox_rate_limits=((50, 1.0), (500, 60.0)),
        options={"retry": calbridge.RetryPolicy(attempts=1)},
    ) as rig:
        for _ in range(60):
            await rig.provider.list_profiles(rig.session)


async def test_enterprise_connect_end_to_end(rig: CronofySandboxRig) -> None:
    provider = rig.provider
    redirect = "https://app.example.test/ec/callback"
    url = provider.enterprise_connect_url(
        calbridge.AuthorizationRequest(
            redirect_uri=redirect, state="ec", login_hint="admin@corp.example"
        )
    )
    assert "/enterprise_connect/oauth/authorize?" in url
    answer = await provider.http.get(url)
    query = urllib.parse.urlsplit(answer.headers["location"]).query
    code = dict(urllib.parse.parse_qsl(query))["code"]
    grant = await provider.exchange_code(code=code, redirect_uri=redirect)
    assert grant.provider_account_id.startswith("ser_")
    assert "service_account/accounts/manage" in grant.tokens.scope
    service = calbridge.Session(
        account=calbridge.Account(
            app_user_id="admin", provider="cronofy", provider_account_id=grant.provider_account_id
        ),
        tokens=calbridge.StaticTokenSource(tokens=grant.tokens),
    )
    info = await provider.userinfo(service)
    assert info.cronofy_type == "service_account"

    await provider.authorize_accounts(
        service,
        [
            ServiceAccountAuthorization.build(
                email="bob@corp.example",
                callback_url=rig.callback_url,
                scopes=["read_events", "create_event", "delete_event"],
                state="bob",
            ),
            ServiceAccountAuthorization.build(
                email="eve@elsewhere.example",
                callback_url=rig.callback_url,
                scopes=["read_events"],
                state="eve",
            ),
        ],
    )
    await rig.settle()
    callbacks = {
        cb.state: cb
        for cb in (
            provider.authorization_callback(r)
            for r in rig.delivered()
            if b'"authorization"' in r.body
        )
    }
    assert callbacks["eve"].error == "access_denied"
    assert callbacks["eve"].code is None
    bob = callbacks["bob"]
    assert bob.code is not None
    assert bob.code not in repr(bob)
    forged = calbridge.WebhookRequest.build(
        headers={"Cronofy-HMAC-SHA256": "AAAA"}, body=b'{"authorization":{"code":"x"}}'
    )
    with pytest.raises(NotificationRejected):
        provider.authorization_callback(forged)

    user = await provider.exchange_service_account_code(
        code=bob.code, callback_url=rig.callback_url
    )
    bob_session = calbridge.Session(
        account=calbridge.Account(
            app_user_id="bob", provider="cronofy", provider_account_id=user.provider_account_id
        ),
        tokens=calbridge.StaticTokenSource(tokens=user.tokens),
    )
    assert any(c.primary for c in await provider.list_calendars(bob_session))
    assert (await provider.userinfo(bob_session)).email == "bob@corp.example"


async def test_secret_rotation(rig: CronofySandboxRig) -> None:
    channel = await rig.provider.subscribe(
        rig.session, calbridge.ChannelRequest(callback_url=rig.callback_url)
    )

    async def lookup(channel_id: str) -> calbridge.Channel | None:
        return channel if channel_id == channel.id else None

    rig.world.rotate_application_secret(SANDBOX_CLIENT_ID, "rotated-secret")
    genuine = await rig.genuine_notification(channel)
    assert "," in genuine.headers["cronofy-hmac-sha256"]
    old_only = rig.provider  # configured with the previous secret
    assert await old_only.verify_notification(genuine, lookup)
    new_only = CronofyProvider(
        http=rig.provider.http,
        settings=calbridge.ProviderSettings(
            client_id=SANDBOX_CLIENT_ID, client_secret="rotated-secret"
        ),
    )
    assert await new_only.verify_notification(genuine, lookup)
    stranger = CronofyProvider(
        http=rig.provider.http,
        settings=calbridge.ProviderSettings(client_id=SANDBOX_CLIENT_ID, client_secret="nope"),
    )
    with pytest.raises(NotificationRejected):
        await stranger.verify_notification(genuine, lookup)


async def test_token_expiring_mid_stream_is_refreshed(rig: CronofySandboxRig) -> None:
    start = rig.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=2)
    for i in range(10):
        await rig.insert_native_event(f"stream {i}", start + dt.timedelta(hours=i))
    await rig.settle()
    seen: list[str] = []
    pages = 0
    async for page in rig.provider.list_events(rig.session, rig.calendar_id, _window(rig)):
        pages += 1
        seen += [e.summary or "" for e in page]
        if pages == 1:
            await _fault(rig, action="expire_tokens", email=rig.email)
    assert pages >= 3
    assert sorted(s for s in seen if s.startswith("stream")) == sorted(
        f"stream {i}" for i in range(10)
    )
    assert rig.session.tokens.refreshes == 1  # type: ignore[attr-defined]
