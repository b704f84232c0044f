"""The Outlook provider against the Graph sandbox: headers, sync, mapping, push, throttling."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from calbridge_outlook import OutlookProvider, make_change_source
from calbridge_outlook.testing import OutlookSandboxRig, sandbox_rig

from calbridge import (
    Change,
    ChangeKind,
    Channel,
    ChannelRequest,
    EventDraft,
    EventTime,
    NotificationKind,
    ProviderSettings,
    SeriesRole,
    TimeRange,
    Transparency,
    Visibility,
    WebhookRequest,
)
from calbridge.errors import Conflict, NotFound, NotificationRejected, SyncCursorExpired
from calbridge.testing import fresh_plugin_host


@pytest.fixture
async def rig() -> AsyncIterator[OutlookSandboxRig]:
    async with sandbox_rig(page_size=3, delta_page_size=2) as r:
        yield r


def _draft(rig: OutlookSandboxRig, hours: float, summary: str, tz: str = "UTC") -> EventDraft:
    start = (rig.now() + dt.timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start, tz),
        end=EventTime.zoned(start + dt.timedelta(minutes=45), tz),
    )


def _window(rig: OutlookSandboxRig, days: int = 30) -> TimeRange:
    return TimeRange(start=rig.now(), end=rig.now() + dt.timedelta(days=days))


async def _round(
    rig: OutlookSandboxRig, cursor: str | None, window: TimeRange | None = None
) -> tuple[list[Change], str, int]:
    changes: list[Change] = []
    pages = 0
    final = ""
    async for page in rig.provider.changes(
        rig.session, rig.calendar_id, cursor, window=window or _window(rig)
    ):
        pages += 1
        assert not final, "a page came after the cursor"
        changes.extend(page.changes)
        final = page.cursor or ""
    assert final
    return changes, final, pages


async def test_every_call_prefers_utc_and_immutable_ids(rig: OutlookSandboxRig) -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request)

    rig.http.event_hooks["request"].append(record)
    made = await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(rig, 30, "hdr"), idempotency_key="hdr"
    )
    await rig.provider.update_event(rig.session, rig.calendar_id, made.id, _draft(rig, 31, "x"))
    await _round(rig, None)
    await rig.provider.list_calendars(rig.session)
    await rig.provider.free_busy(rig.session, [rig.calendar_id], _window(rig))
    await rig.provider.delete_event(rig.session, rig.calendar_id, made.id)
    api = [r for r in seen if "/v1.0/" in r.url.path]
    assert len(api) >= 7
    for request in api:
        prefer = request.headers["prefer"]
        assert 'outlook.timezone="UTC"' in prefer
        assert 'IdType="ImmutableId"' in prefer


async def test_delta_pages_to_a_cursor_and_filters_noise(rig: OutlookSandboxRig) -> None:
    ids = [
        (
            await rig.provider.create_event(
                rig.session, rig.calendar_id, _draft(rig, 24 + i, f"d{i}"), idempotency_key=f"d{i}"
            )
        ).id
        for i in range(5)
    ]
    far = await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(rig, 24 * 60, "far"), idempotency_key="far"
    )
    full, cursor, pages = await _round(rig, None)
    assert pages >= 3
    assert {c.event_id for c in full} == set(ids)
    assert all(c.kind is ChangeKind.UPSERTED for c in full)
    # behind the app's back: an edit in the window, a move out of it, noise outside it
    rig.world.update_event(rig.calendar_id, ids[0], summary="edited")
    later = rig.now() + dt.timedelta(days=50)
    rig.world.update_event(
        rig.calendar_id,
        ids[1],
        start=EventTime.zoned(later, "UTC"),
        end=EventTime.zoned(later + dt.timedelta(hours=1), "UTC"),
    )
    rig.world.update_event(rig.calendar_id, far.id, summary="noise")
    rig.world.delete_event(rig.calendar_id, ids[2])
    delta, cursor2, _ = await _round(rig, cursor)
    kinds = {(c.event_id, c.kind) for c in delta}
    assert kinds == {
        (ids[0], ChangeKind.UPSERTED),
        (ids[1], ChangeKind.DELETED),
        (ids[2], ChangeKind.DELETED),
    }, "the far event's @removed noise must be filtered"
    edited = next(c for c in delta if c.event_id == ids[0])
    assert edited.event is not None
    assert edited.event.summary == "edited"
    quiet, _, _ = await _round(rig, cursor2)
    assert quiet == []


async def test_evicted_delta_token_expires_the_cursor(rig: OutlookSandboxRig) -> None:
    _, cursor, _ = await _round(rig, None)
    evicted = await rig.http.post(f"{rig.base_url}/_control/delta/evict", json={})
    assert evicted.status_code == 204
    with pytest.raises(SyncCursorExpired):
        await _round(rig, cursor)
    with pytest.raises(SyncCursorExpired):
        await _round(rig, "not-a-cursor")


async def test_series_occurrences_and_exceptions_map_back(rig: OutlookSandboxRig) -> None:
    start = dt.datetime(2026, 1, 12, 9, tzinfo=_paris())
    draft = EventDraft(
        summary="standup",
        start=EventTime.zoned(start, "Europe/Paris"),
        end=EventTime.zoned(start + dt.timedelta(minutes=15), "Europe/Paris"),
        recurrence=("RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,TH;WKST=SU;COUNT=4",),
    )
    master = await rig.provider.create_event(
        rig.session, rig.calendar_id, draft, idempotency_key="series"
    )
    assert master.series_role is SeriesRole.MASTER
    assert master.recurrence == draft.recurrence
    assert master.start.tzid == "Europe/Paris"
    window = TimeRange(
        start=dt.datetime(2026, 1, 10, tzinfo=dt.UTC), end=dt.datetime(2026, 2, 10, tzinfo=dt.UTC)
    )
    events = [
        e
        async for page in rig.provider.list_events(rig.session, rig.calendar_id, window)
        for e in page
    ]
    assert [e.series_role for e in events] == [SeriesRole.INSTANCE] * 4
    assert {e.recurring_event_id for e in events} == {master.id}
    assert events[0].original_start is not None
    assert events[0].original_start.as_utc() == events[0].start.as_utc()
    second = events[1]
    moved = await rig.provider.update_event(
        rig.session,
        rig.calendar_id,
        second.id,
        EventDraft(summary="moved", start=second.start, end=second.end),
    )
    assert moved.series_role is SeriesRole.EXCEPTION
    assert moved.recurring_event_id == master.id


def _paris() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


async def test_all_day_show_as_sensitivity_and_zones(rig: OutlookSandboxRig) -> None:
    day = EventDraft(
        summary="offsite",
        start=EventTime.all_day(dt.date(2026, 1, 20)),
        end=EventTime.all_day(dt.date(2026, 1, 21)),
        transparency=Transparency.TRANSPARENT,
        visibility=Visibility.PRIVATE,
        properties={"app_id": "42"},
    )
    made = await rig.provider.create_event(rig.session, rig.calendar_id, day, idempotency_key="ad")
    assert made.start == EventTime.all_day(dt.date(2026, 1, 20))
    assert made.end == EventTime.all_day(dt.date(2026, 1, 21))
    assert made.transparency is Transparency.TRANSPARENT
    assert made.visibility is Visibility.PRIVATE
    assert made.raw["showAs"] == "free"
    fetched = await rig.provider.get_event(rig.session, rig.calendar_id, made.id)
    assert fetched.properties == {"app_id": "42"}
    ny = await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        _draft(rig, 40, "ny", "America/New_York"),
        idempotency_key="ny",
    )
    assert ny.raw["originalStartTimeZone"] == "Eastern Standard Time"
    assert ny.start.tzid == "America/New_York"
    assert ny.raw["start"]["dateTime"].endswith(".0000000")


async def test_stale_etag_conflicts_and_deleting_twice_succeeds(rig: OutlookSandboxRig) -> None:
    made = await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(rig, 30, "v1"), idempotency_key="etag"
    )
    assert made.etag
    updated = await rig.provider.update_event(
        rig.session, rig.calendar_id, made.id, _draft(rig, 30, "v2"), etag=made.etag
    )
    assert updated.etag != made.etag
    with pytest.raises(Conflict):
        await rig.provider.update_event(
            rig.session, rig.calendar_id, made.id, _draft(rig, 30, "v3"), etag=made.etag
        )
    await rig.provider.delete_event(rig.session, rig.calendar_id, made.id)
    await rig.provider.delete_event(rig.session, rig.calendar_id, made.id)


async def test_free_busy_through_get_schedule(rig: OutlookSandboxRig) -> None:
    await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(rig, 26, "busy"), idempotency_key="fb"
    )
    blocks = await rig.provider.free_busy(rig.session, [rig.calendar_id], _window(rig, 3))
    assert len(blocks) == 1
    assert blocks[0].end - blocks[0].start == dt.timedelta(minutes=45)


async def test_mailbox_limiter_prevents_application_throttled() -> None:
    async with sandbox_rig() as rig:
        rig.world.faults.set_latency("graph", 0.15)
        statuses: list[int] = []

        async def record(response: httpx.Response) -> None:
            statuses.append(response.status_code)

        rig.http.event_hooks["response"].append(record)
        results = await asyncio.gather(
            *(rig.provider.list_calendars(rig.session) for _ in range(10))
        )
        assert all(len(r) == 1 for r in results)
        assert 429 not in statuses


async def test_throttling_retry_after_is_honoured_fractionally() -> None:
    async with sandbox_rig(mailbox_concurrency=10) as rig:
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        rig.provider.graph.sleep = sleep
        rig.world.faults.fail_next(
            "graph", 429, retry_after=2.128, path_prefix="/v1.0/me/calendars"
        )
        rig.world.faults.fail_next("graph", 503, retry_after=0.75, path_prefix="/v1.0/me/calendars")
        calendars = await rig.provider.list_calendars(rig.session)
        assert len(calendars) == 1
        assert slept == [2.128, 0.75]


async def test_push_subscribe_verify_renew_and_lifecycle(rig: OutlookSandboxRig) -> None:
    channel = await rig.provider.subscribe(
        rig.session, ChannelRequest(callback_url=rig.callback_url, calendar_ids=(rig.calendar_id,))
    )
    assert channel.secret is not None
    assert "clientState" not in channel.raw
    assert channel.expires_at is not None

    async def known(channel_id: str) -> Channel | None:
        return channel if channel_id == channel.id else None

    validation = WebhookRequest.build(
        headers={"content-type": "text/plain"}, body=b"", query={"validationToken": "a b:c"}
    )
    (hello,) = await rig.provider.verify_notification(validation, known)
    assert hello.kind is NotificationKind.VERIFICATION
    assert hello.reply.status == 200
    assert hello.reply.body == b"a b:c"
    assert hello.reply.content_type == "text/plain"
    genuine = await rig.genuine_notification(channel)
    (change,) = await rig.provider.verify_notification(genuine, known)
    assert change.kind is NotificationKind.CHANGE
    assert change.calendar_ids == (rig.calendar_id,)
    mixed = json.loads(genuine.body)
    mixed["value"].append({**mixed["value"][0], "clientState": "forged", "id": "other"})
    kept = await rig.provider.verify_notification(
        WebhookRequest.build(headers=genuine.headers, body=json.dumps(mixed).encode()), known
    )
    assert len(kept) == 1
    for event, kind in (
        ("reauthorizationRequired", NotificationKind.RENEW),
        ("missed", NotificationKind.RESYNC),
        ("subscriptionRemoved", NotificationKind.RESUBSCRIBE),
    ):
        sent = await rig.http.post(
            f"{rig.base_url}/_control/subscriptions/{channel.id}/lifecycle", json={"event": event}
        )
        assert sent.status_code == 204
        await rig.settle()
        last = [r for r in rig.hooks.for_subscription(channel.id) if b"lifecycleEvent" in r.content]
        (note,) = await rig.provider.verify_notification(rig.hooks.as_webhook(last[-1]), known)
        assert note.kind is kind
    with pytest.raises(NotFound):  # subscriptionRemoved ended it
        await rig.provider.renew(rig.session, channel)
    await rig.provider.unsubscribe(rig.session, channel)  # already gone counts as done
    fresh = await rig.provider.subscribe(
        rig.session, ChannelRequest(callback_url=rig.callback_url, calendar_ids=(rig.calendar_id,))
    )
    await rig.world.clock.advance(3600)
    await rig.session.refresh(await rig.session.access_token())
    renewed = await rig.provider.renew(rig.session, fresh)
    assert renewed.expires_at is not None
    assert fresh.expires_at is not None
    assert renewed.expires_at > fresh.expires_at
    with pytest.raises(NotificationRejected):
        await rig.provider.verify_notification(
            WebhookRequest.build(headers={}, body=b"not json"), known
        )


async def test_unreachable_callback_refuses_the_subscription(rig: OutlookSandboxRig) -> None:
    from calbridge.errors import InvalidRequest

    rig.hooks.echo = False
    with pytest.raises(InvalidRequest):
        await rig.provider.subscribe(rig.session, ChannelRequest(callback_url=rig.callback_url))


def test_change_source_is_push_with_a_callback_url() -> None:
    """Push with a public callback URL; without one the polling plugin answers."""
    host = fresh_plugin_host()
    assert host.providers()["outlook"].cls is OutlookProvider
    assert "graph" in host.sandbox_factories()
    provider = OutlookProvider(http=httpx.AsyncClient(), settings=ProviderSettings())
    assert host.make_change_source(provider, "https://app.example.test/hooks").kind == "push"
    assert host.make_change_source(provider, None).kind == "poll"
    assert make_change_source(provider, None) is None


async def test_revoke_is_a_local_forget_unless_sign_in_sessions_are_revoked() -> None:
    """No revocation endpoint for delegated tokens: by default nothing is sent."""
    from calbridge.errors import ReauthRequired

    async with sandbox_rig() as rig:
        tokens = await rig.session.access_token()
        await rig.provider.revoke_tokens(tokens)
        assert len(await rig.provider.list_calendars(rig.session)) == 1
    async with sandbox_rig(revoke_sign_in_sessions=True) as rig:
        tokens = await rig.session.access_token()
        await rig.provider.revoke_tokens(tokens)
        with pytest.raises(ReauthRequired):
            await rig.provider.list_calendars(rig.session)


async def test_without_the_limiter_graph_throttles_and_retries_recover() -> None:
    """The contrast: a limiter wider than Outlook's 4 meets ApplicationThrottled, and the
    fractional Retry-After it carries is waited out."""
    async with sandbox_rig(mailbox_concurrency=10) as rig:
        rig.world.faults.set_latency("graph", 0.15)
        statuses: list[int] = []

        async def record(response: httpx.Response) -> None:
            statuses.append(response.status_code)

        rig.http.event_hooks["response"].append(record)
        results = await asyncio.gather(
            *(rig.provider.list_calendars(rig.session) for _ in range(8))
        )
        assert all(len(r) == 1 for r in results)
        assert 429 in statuses


async def test_free_busy_of_a_secondary_calendar_comes_from_its_view(
    rig: OutlookSandboxRig,
) -> None:
    second = rig.world.add_calendar(rig.email, "Projects")
    await rig.provider.create_event(
        rig.session, second.id, _draft(rig, 27, "project"), idempotency_key="fb2"
    )
    free = _draft(rig, 29, "free time")
    await rig.provider.create_event(
        rig.session,
        second.id,
        EventDraft(
            summary="free", start=free.start, end=free.end, transparency=Transparency.TRANSPARENT
        ),
        idempotency_key="fb3",
    )
    blocks = await rig.provider.free_busy(
        rig.session, [rig.calendar_id, second.id], _window(rig, 3)
    )
    assert [(b.calendar_id, b.end - b.start) for b in blocks] == [
        (second.id, dt.timedelta(minutes=45))
    ]
    with pytest.raises(NotFound):
        await rig.provider.free_busy(rig.session, ["nope"], _window(rig, 3))


async def test_repeated_updated_notifications_share_one_delivery_key(
    rig: OutlookSandboxRig,
) -> None:
    """Graph often sends several ``updated`` notifications for one edit: they collapse."""
    channel = await rig.provider.subscribe(
        rig.session, ChannelRequest(callback_url=rig.callback_url, calendar_ids=(rig.calendar_id,))
    )

    async def known(channel_id: str) -> Channel | None:
        return channel if channel_id == channel.id else None

    made = await rig.provider.create_event(
        rig.session, rig.calendar_id, _draft(rig, 30, "r"), idempotency_key="repeat"
    )
    rig.world.views["graph"].settings.updated_repeats = 3
    rig.world.update_event(rig.calendar_id, made.id, summary="edited once")
    await rig.settle()
    updates = [
        r
        for r in rig.hooks.for_subscription(channel.id)
        if json.loads(r.content)["value"][0]["changeType"] == "updated"
    ]
    assert len(updates) == 3
    keys = set()
    for request in updates:
        (note,) = await rig.provider.verify_notification(rig.hooks.as_webhook(request), known)
        keys.add(note.delivery_key)
    assert len(keys) == 1
