"""More of the Google sandbox: instance exceptions, HTTP controls, renewal end to end."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import httpx
from calbridge_google.sandbox import google_sandbox
from calbridge_google.testing import REDIRECT_URI, sandbox_rig

from calbridge import (
    AuthorizationRequest,
    Channel,
    ChannelRequest,
    EventTime,
    NotificationKind,
    SeriesRole,
)


async def test_patching_an_instance_makes_an_exception() -> None:
    """A patched instance id becomes an exception; the master and other instances stay."""
    async with sandbox_rig() as rig:
        start = rig.now() + dt.timedelta(days=1)
        master = rig.world.insert_event(
            rig.calendar_id,
            start=EventTime.zoned(start, "America/New_York"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "America/New_York"),
            summary="standup",
            recurrence=["RRULE:FREQ=DAILY;COUNT=3"],
        )
        cursor = [p async for p in rig.provider.changes(rig.session, rig.calendar_id, None)][-1]
        instances = [
            e
            async for page in rig.provider.list_instances(rig.session, rig.calendar_id, master.id)
            for e in page
        ]
        assert [e.series_role for e in instances] == [SeriesRole.INSTANCE] * 3
        target = instances[1].id
        tokens = await rig.session.access_token()
        r = await rig.provider.http.patch(
            f"{rig.base_url}/calendar/v3/calendars/primary/events/{target}",
            json={"summary": "moved standup"},
            headers={"Authorization": f"Bearer {tokens.access_token.reveal()}"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["recurringEventId"] == master.id
        delta = [
            c
            async for page in rig.provider.changes(rig.session, rig.calendar_id, cursor.cursor)
            for c in page.changes
        ]
        assert [c.event_id for c in delta] == [target]
        assert delta[0].event is not None
        assert delta[0].event.series_role is SeriesRole.EXCEPTION
        assert delta[0].event.summary == "moved standup"
        assert rig.world.event(rig.calendar_id, master.id).summary == "standup"


async def test_http_controls_and_path_scoped_faults() -> None:
    """/google/_sandbox controls mint tokens, expire sync tokens and inject errors."""
    async with sandbox_rig() as rig:
        http, base = rig.provider.http, rig.base_url
        minted = (await http.post(f"{base}/_sandbox/tokens", json={"email": "z@x.com"})).json()
        auth = {"Authorization": f"Bearer {minted['access_token']}"}
        events = f"{base}/calendar/v3/calendars/primary/events"
        token = (await http.get(events, headers=auth)).json()["nextSyncToken"]
        await http.post(f"{base}/_sandbox/expire-sync-tokens", json={})
        assert (
            await http.get(events, params={"syncToken": token}, headers=auth)
        ).status_code == 410
        await http.post(f"{base}/_sandbox/errors", json={"status": 403, "reason": "quotaExceeded"})
        r = await http.get(events, headers=auth)
        assert r.status_code == 403
        assert r.json()["error"]["errors"][0] == {
            "domain": "usageLimits", "reason": "quotaExceeded",
            "message": "Calendar usage limits exceeded.",
        }  # fmt: skip
        rig.world.faults.fail_next("google", 503, path_prefix="/calendar/v3/freeBusy")
        assert (await http.get(events, headers=auth)).status_code == 200
        fb = await http.post(f"{base}/calendar/v3/freeBusy", json={}, headers=auth)
        assert fb.status_code == 503
        assert fb.json()["error"]["errors"][0]["reason"] == "backendError"
        google_sandbox(rig.world).settings.sync_token_ttl = 60
        token = (await http.get(events, headers=auth)).json()["nextSyncToken"]
        await rig.world.clock.advance(61)
        assert (
            await http.get(events, params={"syncToken": token}, headers=auth)
        ).status_code == 410


async def test_consent_without_openid_and_for_microsoft_users() -> None:
    """Without an id_token the account is the primary calendar; Microsoft users are refused."""
    async with sandbox_rig() as rig:
        p, http = rig.provider, rig.provider.http
        url = p.authorization_url(
            AuthorizationRequest(redirect_uri=REDIRECT_URI, state="s", login_hint="m@x.com",
                                 scopes=("https://www.googleapis.com/auth/calendar",))
        )  # fmt: skip
        code = parse_qs(urlsplit((await http.get(url)).headers["location"]).query)["code"][0]
        grant = await p.exchange_code(code=code, redirect_uri=REDIRECT_URI)
        assert (grant.provider_account_id, grant.email) == ("m@x.com", "m@x.com")
        rig.world.add_user("ms@x.com", native="microsoft")
        url = p.authorization_url(
            AuthorizationRequest(redirect_uri=REDIRECT_URI, state="s", login_hint="ms@x.com")
        )
        refused = parse_qs(urlsplit((await http.get(url)).headers["location"]).query)
        assert refused == {"error": ["access_denied"], "state": ["s"]}
        minted = await http.post(f"{rig.base_url}/_sandbox/tokens", json={"email": "ms@x.com"})
        assert minted.status_code == 400


async def test_renewal_overlaps_then_stops_the_old_channel() -> None:
    """After renew, changes notify the new channel only, and they verify."""
    async with sandbox_rig() as rig:
        p = rig.provider
        old = await p.subscribe(rig.session, ChannelRequest(callback_url=rig.callback_url))
        new = await p.renew(rig.session, old)
        view = google_sandbox(rig.world)
        assert {c.id: c.stopped for c in view.channels()} == {old.id: True, new.id: False}
        start = rig.now() + dt.timedelta(hours=5)
        rig.world.insert_event(
            rig.calendar_id,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        )
        await rig.settle()
        assert [r.headers["x-goog-resource-state"] for r in rig.hooks.for_channel(old.id)] == [
            "sync"
        ]
        got = rig.hooks.for_channel(new.id)
        assert [r.headers["x-goog-resource-state"] for r in got] == ["sync", "exists"]

        async def lookup(channel_id: str) -> Channel | None:
            return new if channel_id == new.id else None

        kinds = [
            n.kind
            for r in got
            for n in await p.verify_notification(rig.hooks.as_webhook(r), lookup)
        ]
        assert kinds == [NotificationKind.SYNC, NotificationKind.CHANGE]


def test_rig_hooks_record_requests() -> None:
    """The capture answers 200 and keeps requests by channel."""
    from calbridge_google.testing import HookCapture

    hooks = HookCapture()
    with httpx.Client(transport=httpx.MockTransport(hooks)) as c:
        assert c.post("http://h/x", headers={"X-Goog-Channel-ID": "a"}).status_code == 200
    assert len(hooks.for_channel("a")) == 1


async def test_expanded_changes_and_googles_push_quirks() -> None:
    """expand_changes syncs instances (a deleted series = cancelled instances); storms and
    late messages after stop are reproducible on demand."""
    async with sandbox_rig() as rig:
        rig.provider.expand_changes = True
        view = rig.google
        view.settings.notifications_per_change = 3
        view.settings.notifications_after_stop = 1
        channel = await rig.provider.subscribe(
            rig.session, ChannelRequest(callback_url=rig.callback_url)
        )
        start = rig.now() + dt.timedelta(days=1)
        master = rig.world.insert_event(
            rig.calendar_id,
            start=EventTime.zoned(start, "Europe/Berlin"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "Europe/Berlin"),
            recurrence=["RRULE:FREQ=WEEKLY;COUNT=2"],
        )
        pages = [p async for p in rig.provider.changes(rig.session, rig.calendar_id, None)]
        roles = [c.event.series_role for p in pages for c in p.changes if c.event]
        assert roles == [SeriesRole.INSTANCE, SeriesRole.INSTANCE]
        rig.world.delete_event(rig.calendar_id, master.id)
        delta = [
            c
            async for p in rig.provider.changes(rig.session, rig.calendar_id, pages[-1].cursor)
            for c in p.changes
        ]
        assert [(c.event.status.value, c.event.series_role) for c in delta if c.event] == [
            ("cancelled", SeriesRole.EXCEPTION)
        ] * 2
        await rig.settle()
        states = [r.headers["x-goog-resource-state"] for r in rig.hooks.for_channel(channel.id)]
        assert states == ["sync", "exists", "exists", "exists"] + ["not_exists"] * 3
        await rig.provider.unsubscribe(rig.session, channel)
        for n in range(2):
            rig.world.insert_event(
                rig.calendar_id,
                start=EventTime.zoned(start + dt.timedelta(hours=n + 3), "UTC"),
                end=EventTime.zoned(start + dt.timedelta(hours=n + 4), "UTC"),
            )
        await rig.settle()
        assert len(rig.hooks.for_channel(channel.id)) == 8
