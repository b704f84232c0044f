"""Cronofy reads, changes, writes, free/busy, calendars and channels (MockTransport)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from calbridge_cronofy import CronofyProvider
from calbridge_cronofy.testing import API, FakeCronofy, event_json, events_page, ok

import calbridge
from calbridge.errors import (
    InvalidRequest,
    NotFound,
    NotSupported,
    ProviderResponseError,
    SyncCursorExpired,
)

WINDOW = calbridge.TimeRange(
    start=dt.datetime(2026, 1, 5, tzinfo=dt.UTC), end=dt.datetime(2026, 1, 15, tzinfo=dt.UTC)
)
NOW = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def _draft(summary: str = "Lunch") -> calbridge.EventDraft:
    start = dt.datetime(2026, 1, 6, 12, tzinfo=dt.UTC)
    return calbridge.EventDraft(
        summary=summary,
        start=calbridge.EventTime.zoned(start, "Europe/London"),
        end=calbridge.EventTime.zoned(start + dt.timedelta(hours=1), "Europe/London"),
        location="Canteen",
        attendees=(calbridge.Attendee(email="bob@example.com", name="Bob"),),
    )


def _three_pages(fake: FakeCronofy, last_next: str | None) -> None:
    fake.on(
        "GET",
        "/v1/events",
        ok(events_page([event_json(0), event_json(1)], f"{API}/v1/events/pages/p2", 1, 3)),
    )
    fake.on(
        "GET",
        "/v1/events/pages/p2",
        ok(events_page([event_json(2)], f"{API}/v1/events/pages/p3", 2, 3)),
    )
    fake.on("GET", "/v1/events/pages/p3", ok(events_page([event_json(3)], last_next, 3, 3)))


@pytest.mark.parametrize("last_next", [None, ""])
async def test_list_events_follows_next_page(
    provider: CronofyProvider,
    fake: FakeCronofy,
    session: calbridge.Session,
    last_next: str | None,
) -> None:
    _three_pages(fake, last_next)
    pages = [p async for p in provider.list_events(session, "cal_1", WINDOW)]
    assert [len(p) for p in pages] == [2, 1, 1]
    first = fake.requests[0]
    params = first.url.params
    assert first.url.path == "/v1/events"
    assert params["tzid"] == "Etc/UTC"
    assert params["from"] == "2026-01-05T00:00:00Z"
    assert params["to"] == "2026-01-15T00:00:00Z"
    assert params.get_list("calendar_ids[]") == ["cal_1"]
    assert params["include_managed"] == "true"
    assert params["include_deleted"] == "false"
    assert params["localized_times"] == "true"
    assert params["google_event_ids"] == "true"
    assert first.headers["authorization"] == "Bearer paw"
    for later in fake.requests[1:]:
        assert not later.url.params
        assert later.headers["authorization"] == "Bearer paw"
    assert len(fake.requests) == 3
    ev = pages[0][0]
    assert ev.id == "evt_external_54008b1a4a41730000"
    assert ev.provider == "cronofy"
    assert ev.summary == "Company Retreat 0"
    assert ev.location == "Beach"
    assert ev.start.as_utc() == dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC)
    assert ev.organizer == calbridge.Person(email="example@cronofy.com", name="Example Person")
    assert ev.attendees[0].response is calbridge.ResponseStatus.NEEDS_ACTION
    assert ev.raw["options"]["delete"] is True


async def test_stopping_early_cancels_the_prefetch(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    _three_pages(fake, None)
    stream = provider.list_events(session, "cal_1", WINDOW)
    async for _page in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    gc.collect()
    await asyncio.sleep(0)
    assert len(fake.requests) <= 2


async def test_without_prefetch_one_request_per_page(
    make_provider: Callable[..., CronofyProvider],
    fake: FakeCronofy,
    session: calbridge.Session,
) -> None:
    _three_pages(fake, None)
    provider = make_provider(prefetch=False)
    seen = []
    async for page in provider.list_events(session, "cal_1", WINDOW):
        seen.append(len(fake.requests))
        assert page
    assert seen == [1, 2, 3]


async def test_event_shapes(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    events = [
        event_json(0, event_id="my-key-1"),  # managed: id is event_id
        event_json(1, start="2026-01-07", end="2026-01-08"),  # all-day
        event_json(
            2,
            start={"time": "2026-01-06T10:00:00+00:00", "tzid": "Europe/London"},
            end={"time": "2026-01-06T11:00:00+00:00", "tzid": "Europe/London"},
            transparency="transparent",
            event_private=True,
            status="tentative",
            ical_uid="abc@google.com",
        ),
        event_json(3, recurring=True, series_identifier="ser_1"),
        event_json(4, deleted=True),
    ]
    fake.on("GET", "/v1/events", ok(events_page(events, None)))
    (page,) = [p async for p in provider.list_events(session, "cal_1", WINDOW)]
    managed, all_day, zoned, instance = page
    assert managed.id == "my-key-1"
    assert all_day.start == calbridge.EventTime.all_day(dt.date(2026, 1, 7))
    assert all_day.end.is_all_day
    assert zoned.start.tzid == "Europe/London"
    assert zoned.transparency is calbridge.Transparency.TRANSPARENT
    assert zoned.visibility is calbridge.Visibility.PRIVATE
    assert zoned.status is calbridge.EventStatus.TENTATIVE
    assert zoned.ical_uid == "abc@google.com"
    assert instance.series_role is calbridge.SeriesRole.INSTANCE
    assert instance.recurring_event_id == "ser_1"


async def test_changes_full_then_incremental(
    make_provider: Callable[..., CronofyProvider],
    fake: FakeCronofy,
    session: calbridge.Session,
) -> None:
    provider = make_provider(clock=lambda: NOW, cursor_margin_seconds=60)
    fake.on(
        "GET", "/v1/events", ok(events_page([event_json(0), event_json(1, deleted=True)], None))
    )
    pages = [p async for p in provider.changes(session, "cal_1", None)]
    assert len(pages) == 1
    assert pages[0].full
    assert pages[0].cursor == "2026-01-05T08:59:00Z"
    assert [c.kind for c in pages[0].changes] == [calbridge.ChangeKind.UPSERTED]
    params = fake.requests[-1].url.params
    assert "last_modified" not in params
    assert "from" not in params  # Cronofy's own sync window

    fake.requests.clear()
    _three_pages(fake, None)
    fake.on(
        "GET",
        "/v1/events/pages/p3",
        ok(events_page([event_json(3, deleted=True, event_id="mine")], None, 3, 3)),
    )
    pages = [p async for p in provider.changes(session, "cal_1", "2026-01-05T08:00:00Z")]
    params = fake.requests[0].url.params
    assert params["last_modified"] == "2026-01-05T08:00:00Z"
    assert params["include_deleted"] == "true"
    assert params["include_moved"] == "true"
    assert [p.cursor for p in pages] == [None, None, "2026-01-05T08:59:00Z"]
    assert not any(p.full for p in pages)
    last = pages[-1].changes[-1]
    assert last.kind is calbridge.ChangeKind.DELETED
    assert last.event_id == "mine"
    assert last.event is None

    with pytest.raises(SyncCursorExpired):
        async for _ in provider.changes(session, "cal_1", "not-a-time"):
            pass


async def test_create_update_delete(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    fake.on("POST", "/v1/calendars/cal_1/events", ok(status=202))
    fake.on("DELETE", "/v1/calendars/cal_1/events", ok(status=202))
    created = await provider.create_event(session, "cal_1", _draft(), idempotency_key="key-1")
    assert fake.body() == {
        "event_id": "key-1",
        "summary": "Lunch",
        "start": {"time": "2026-01-06T12:00:00Z", "tzid": "Europe/London"},
        "end": {"time": "2026-01-06T13:00:00Z", "tzid": "Europe/London"},
        "tzid": "Europe/London",
        "location": {"description": "Canteen"},
        "attendees": {"invite": [{"email": "bob@example.com", "display_name": "Bob"}]},
    }
    assert created.id == "key-1"
    assert created.calendar_id == "cal_1"
    assert created.summary == "Lunch"

    await provider.update_event(session, "cal_1", "key-1", _draft("Dinner"))
    assert fake.body()["event_id"] == "key-1"
    assert fake.body()["summary"] == "Dinner"
    ext = await provider.update_event(session, "cal_1", "evt_external_1", _draft("Ext"))
    assert fake.body()["event_uid"] == "evt_external_1"
    assert "event_id" not in fake.body()
    assert ext.id == "evt_external_1"

    await provider.delete_event(session, "cal_1", "key-1")
    assert fake.requests[-1].method == "DELETE"
    assert fake.body() == {"event_id": "key-1"}
    await provider.delete_event(session, "cal_1", "evt_external_1")
    assert fake.body() == {"event_uid": "evt_external_1"}

    with pytest.raises(InvalidRequest, match="evt_"):
        await provider.create_event(session, "cal_1", _draft(), idempotency_key="evt_x")
    with pytest.raises(NotSupported):
        await provider.update_event(session, "cal_1", "key-1", _draft(), etag="e1")


async def test_all_day_recurring_private_upsert(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    fake.on("POST", "/v1/calendars/cal_1/events", ok(status=202))
    draft = calbridge.EventDraft(
        summary="Standup",
        start=calbridge.EventTime.all_day(dt.date(2026, 1, 6)),
        end=calbridge.EventTime.all_day(dt.date(2026, 1, 7)),
        transparency=calbridge.Transparency.TRANSPARENT,
        visibility=calbridge.Visibility.PRIVATE,
        recurrence=("RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=5;BYDAY=MO,WE",),
    )
    await provider.create_event(session, "cal_1", draft, idempotency_key="k")
    body = fake.body()
    assert body["start"] == "2026-01-06"
    assert body["end"] == "2026-01-07"
    assert body["transparency"] == "transparent"
    assert body["event_private"] is True
    assert body["recurrence"] == {
        "rules": [
            {"frequency": "weekly", "interval": 2, "count": 5, "by_day": ["monday", "wednesday"]}
        ]
    }
    bad = calbridge.EventDraft(
        start=draft.start, end=draft.end, recurrence=("RRULE:FREQ=WEEKLY;BYSETPOS=1",)
    )
    with pytest.raises(InvalidRequest, match="BYSETPOS"):
        await provider.create_event(session, "cal_1", bad, idempotency_key="k2")


async def test_floating_time_goes_in_default_zone(
    make_provider: Callable[..., CronofyProvider],
    fake: FakeCronofy,
    session: calbridge.Session,
) -> None:
    fake.on("POST", "/v1/calendars/cal_1/events", ok(status=202))
    provider = make_provider(default_tzid="Europe/Paris")
    start = dt.datetime(2026, 7, 1, 9)
    draft = calbridge.EventDraft(
        summary="f",
        start=calbridge.EventTime.floating(start),
        end=calbridge.EventTime.floating(start + dt.timedelta(hours=1)),
    )
    await provider.create_event(session, "cal_1", draft, idempotency_key="k")
    assert fake.body()["start"] == {"time": "2026-07-01T07:00:00Z", "tzid": "Europe/Paris"}


async def test_calendars_and_identity(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    cal = {
        "provider_name": "google",
        "profile_id": "pro_n23kjnwrw2",
        "profile_name": "example@cronofy.com",
        "calendar_id": "cal_n23kjnwrw2_jsdfjksn234",
        "calendar_name": "Home",
        "calendar_readonly": False,
        "calendar_deleted": False,
        "calendar_primary": True,
        "permission_level": "unrestricted",
    }
    gone = {**cal, "calendar_id": "cal_gone", "calendar_deleted": True}
    ro = {**cal, "calendar_id": "cal_ro", "calendar_readonly": True, "calendar_primary": False}
    fake.on("GET", "/v1/calendars", ok({"sub": "acc_1", "calendars": [cal, gone, ro]}))
    cals = await provider.list_calendars(session)
    assert [(c.id, c.primary, c.read_only) for c in cals] == [
        ("cal_n23kjnwrw2_jsdfjksn234", True, False),
        ("cal_ro", False, True),
    ]
    assert cals[0].name == "Home"
    assert cals[0].raw["permission_level"] == "unrestricted"

    fake.on("POST", "/v1/calendars", ok({"calendar": {**cal, "calendar_name": "New"}}))
    new = await provider.create_calendar(session, "pro_n23kjnwrw2", "New")
    assert fake.body() == {"profile_id": "pro_n23kjnwrw2", "name": "New"}
    assert new.name == "New"
    fake.on(
        "POST",
        "/v1/calendars",
        ok(
            {
                "errors": {
                    "name": [
                        {
                            "key": "errors.duplicate_calendar_name",
                            "description": "A calendar with this name already exists",
                        }
                    ]
                }
            },
            status=422,
        ),
    )
    with pytest.raises(InvalidRequest) as info:
        await provider.create_calendar(session, "pro_n23kjnwrw2", "New")
    assert info.value.field_errors == {
        "name": ("A calendar with this name already exists (errors.duplicate_calendar_name)",)
    }

    fake.on(
        "GET",
        "/v1/userinfo",
        ok(
            {
                "sub": "acc_5ba21743f408617d1269ea1e",
                "email": "janed@company.com",
                "name": "Jane Doe",
                "zoneinfo": "Europe/London",
                "cronofy.type": "account",
                "cronofy.data": {
                    "authorization": {"scope": "read_write", "status": "active"},
                    "profiles": [
                        {
                            "provider_name": "google",
                            "provider_service": "gsuite",
                            "profile_id": "pro_n23kjnwrw2",
                            "profile_name": "janed@company.com",
                            "profile_connected": False,
                            "profile_initial_sync_required": True,
                            "profile_relink_url": "https://app.cronofy.com/relink/profiles/pro_n23",
                            "profile_calendars": [cal],
                        }
                    ],
                },
            }
        ),
    )
    info2 = await provider.userinfo(session)
    assert info2.cronofy_type == "account"
    assert info2.cronofy_data is not None
    assert info2.cronofy_data.authorization is not None
    assert info2.cronofy_data.authorization.status == "active"
    prof = info2.cronofy_data.profiles[0]
    assert not prof.profile_connected
    assert prof.profile_initial_sync_required
    assert prof.profile_relink_url == "https://app.cronofy.com/relink/profiles/pro_n23"
    assert prof.profile_calendars[0].calendar_name == "Home"

    fake.on(
        "GET",
        "/v1/profiles",
        ok(
            {
                "profiles": [
                    {
                        "provider_name": "google",
                        "profile_id": "pro_1",
                        "profile_name": "a@b",
                        "profile_connected": True,
                    }
                ]
            }
        ),
    )
    assert [p.profile_id for p in await provider.list_profiles(session)] == ["pro_1"]
    fake.on("POST", "/v1/profiles/pro_1/revoke", ok(status=202))
    await provider.revoke_profile(session, "pro_1")


async def test_free_busy_and_participation(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    def fb(request: httpx.Request) -> httpx.Response:
        return ok(
            {
                "pages": {"current": 1, "total": 1},
                "free_busy": [
                    {
                        "calendar_id": "cal_1",
                        "start": "2026-01-06T09:00:00Z",
                        "end": "2026-01-06T10:00:00Z",
                        "free_busy_status": "busy",
                    },
                    {
                        "calendar_id": "cal_1",
                        "start": "2026-01-06T11:00:00Z",
                        "end": "2026-01-06T12:00:00Z",
                        "free_busy_status": "free",
                    },
                    {
                        "calendar_id": "cal_2",
                        "start": "2026-01-07",
                        "end": "2026-01-08",
                        "free_busy_status": "tentative",
                    },
                ],
            }
        )

    fake.on("GET", "/v1/free_busy", fb)
    blocks = await provider.free_busy(session, ["cal_1", "cal_2"], WINDOW)
    params = fake.requests[-1].url.params
    assert params.get_list("calendar_ids[]") == ["cal_1", "cal_2"]
    assert params["include_managed"] == "true"
    assert [(b.calendar_id, b.status) for b in blocks] == [
        ("cal_1", calbridge.FreeBusyStatus.BUSY),
        ("cal_2", calbridge.FreeBusyStatus.TENTATIVE),
    ]
    assert blocks[1].start == dt.datetime(2026, 1, 7, tzinfo=dt.UTC)

    fake.on(
        "POST", "/v1/calendars/cal_1/events/evt_external_1/participation_status", ok(status=202)
    )
    await provider.change_participation_status(
        session, "cal_1", "evt_external_1", calbridge.ResponseStatus.ACCEPTED
    )
    assert fake.body() == {"status": "accepted"}
    with pytest.raises(InvalidRequest):
        await provider.change_participation_status(
            session, "cal_1", "evt_external_1", calbridge.ResponseStatus.UNKNOWN
        )


async def test_channels(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    answer: dict[str, Any] = {
        "channel": {
            "channel_id": "chn_54cf7c7cb4ad4c1027000001",
            "callback_url": "https://app.example/hook",
            "filters": {"calendar_ids": ["cal_1"], "only_managed": True},
        }
    }
    fake.on("POST", "/v1/channels", ok(answer))
    ch = await provider.subscribe(
        session,
        calbridge.ChannelRequest(
            callback_url="https://app.example/hook",
            calendar_ids=("cal_1",),
            filters={"only_managed": "true"},
        ),
    )
    assert fake.body() == {
        "callback_url": "https://app.example/hook",
        "filters": {"calendar_ids": ["cal_1"], "only_managed": True},
    }
    assert ch.id == "chn_54cf7c7cb4ad4c1027000001"
    assert ch.calendar_ids == ("cal_1",)
    assert ch.filters == {"only_managed": "true"}
    assert ch.account_id == "a-1"
    again = await provider.renew(session, ch)
    assert again.id == ch.id
    assert fake.body()["filters"]["only_managed"] is True

    fake.on("GET", "/v1/channels", ok({"channels": [answer["channel"]]}))
    assert [c.id for c in await provider.list_channels(session)] == [ch.id]
    fake.on("DELETE", f"/v1/channels/{ch.id}", ok(status=202), ok({}, status=404))
    await provider.unsubscribe(session, ch)
    await provider.unsubscribe(session, ch)  # already closed: fine
    assert [r.method for r in fake.requests[-2:]] == ["DELETE", "DELETE"]

    fake.on(
        "POST",
        "/v1/channels",
        ok({"channel": {"channel_id": "chn_2", "callback_url": "https://x", "filters": {}}}),
    )
    plain = await provider.subscribe(session, calbridge.ChannelRequest(callback_url="https://x"))
    assert fake.body() == {"callback_url": "https://x"}
    assert plain.calendar_ids == ()
    assert plain.filters == {}


async def test_unknown_calendar_is_not_found(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session
) -> None:
    fake.on("DELETE", "/v1/calendars/cal_nope/events", ok({}, status=404))
    with pytest.raises(NotFound):
        await provider.delete_event(session, "cal_nope", "k")


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://evil.example/v1/events/pages/p2",
        "http://api-uk.cronofy.com/v1/events/pages/p2",
        "https://api-uk.cronofy.com:8443/v1/events/pages/p2",
        "https://api-uk.cronofy.com.evil.example/v1/events/pages/p2",
        "https://api-uk.cronofy.com@evil.example/v1/events/pages/p2",
        "not a url at all ::",
    ],
)
async def test_next_page_elsewhere_is_not_followed(
    provider: CronofyProvider, fake: FakeCronofy, session: calbridge.Session, elsewhere: str
) -> None:
    fake.on("GET", "/v1/events", ok(events_page([event_json(0)], elsewhere, 1, 2)))
    with pytest.raises(ProviderResponseError, match="next_page"):
        async for _ in provider.list_events(session, "cal_1", WINDOW):
            pass
    assert len(fake.requests) == 1
