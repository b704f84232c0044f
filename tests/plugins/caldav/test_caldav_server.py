"""CalDAV against a real Radicale: discovery, Basic auth, sync tokens, ETags, series
(RECURRENCE-ID overrides, EXDATE), time zones (VTIMEZONE, all-day), free/busy."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import httpx
import pytest
from calbridge_caldav import CalDAVProvider, caldav_credentials, resource_name
from calbridge_caldav.testing import CalDAVRig, RadicaleServer, caldav_rig

from calbridge import (
    ChangeKind,
    ChangePage,
    Event,
    EventDraft,
    EventTime,
    FreeBusyStatus,
    ProviderSettings,
    SeriesRole,
    TimeRange,
    Transparency,
)
from calbridge.errors import Conflict, ReauthRequired, SyncCursorExpired

PARIS = ZoneInfo("Europe/Paris")


def _monday(weeks_ahead: int = 1) -> dt.date:
    today = dt.datetime.now(dt.UTC).date()
    return today + dt.timedelta(days=7 * weeks_ahead - today.weekday())


def _paris(day: dt.date, hour: int) -> EventTime:
    return EventTime.zoned(dt.datetime(day.year, day.month, day.day, hour, tzinfo=PARIS))


def _window(start: dt.date, days: int) -> TimeRange:
    begin = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC) - dt.timedelta(days=1)
    return TimeRange(start=begin, end=begin + dt.timedelta(days=days + 2))


async def _events(rig: CalDAVRig, window: TimeRange) -> list[Event]:
    out: list[Event] = []
    async for page in rig.provider.list_events(rig.session, rig.calendar_id, window):
        out.extend(page)
    return sorted(out, key=lambda e: e.start.as_utc())


async def _sync(rig: CalDAVRig, cursor: str | None) -> tuple[list[ChangePage], str]:
    pages = [p async for p in rig.provider.changes(rig.session, rig.calendar_id, cursor)]
    assert pages[-1].cursor is not None
    return pages, pages[-1].cursor


# -- discovery and auth ------------------------------------------------------------------


async def test_discovery_names_colors_and_read_only(radicale: RadicaleServer) -> None:
    """Calendars come from the calendar-home-set of the current-user-principal, with
    displayname, color and read-only from current-user-privilege-set."""
    radicale.make_calendar("bob", "work", display_name="Work", color="#FF0000FF")
    radicale.make_calendar("bob", "read-only", display_name="Holidays")
    async with caldav_rig(radicale, "bob") as rig:
        calendars = {c.id: c for c in await rig.provider.list_calendars(rig.session)}

    assert calendars["/bob/work/"].name == "Work"
    assert calendars["/bob/work/"].raw["color"] == "#FF0000FF"
    assert calendars["/bob/work/"].read_only is False
    assert calendars["/bob/read-only/"].name == "Holidays"
    assert calendars["/bob/read-only/"].read_only is True
    assert sum(c.primary for c in calendars.values()) == 1
    assert all(c.provider == "caldav" for c in calendars.values())


async def test_basic_auth_is_required_and_checked(rig: CalDAVRig) -> None:
    """The server refuses anonymous requests; the provider's Basic credentials pass, and
    re-checking them (refresh_tokens) keeps good ones and refuses a wrong password."""
    async with httpx.AsyncClient() as client:
        anonymous = await client.request(
            "PROPFIND", rig.server.url + "alice/", headers={"Depth": "0"}
        )
    assert anonymous.status_code == 401
    good = caldav_credentials("alice", rig.server.users["alice"])

    assert await rig.provider.refresh_tokens(good) is good
    with pytest.raises(ReauthRequired):
        await rig.provider.refresh_tokens(caldav_credentials("alice", "wrong"))


# -- sync-collection ------------------------------------------------------------------------


async def test_sync_token_invalidation_raises_cursor_expired(rig: CalDAVRig) -> None:
    """A sync token the server no longer knows is SyncCursorExpired (calbridge then reads
    in full); the full read gives every event and a fresh token that works."""
    day = _monday()
    created = await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        EventDraft(summary="kept", start=_paris(day, 9), end=_paris(day, 10)),
        idempotency_key="sync-1",
    )
    _, cursor = await _sync(rig, None)
    bogus = cursor[: cursor.rindex("/") + 1] + "0" * 64

    with pytest.raises(SyncCursorExpired):
        await _sync(rig, bogus)
    full, fresh = await _sync(rig, None)
    assert all(p.full for p in full)
    assert created.id in {c.event_id for p in full for c in p.changes}
    again, _ = await _sync(rig, fresh)
    assert [c for p in again for c in p.changes] == []


async def test_changes_report_deletions_and_other_clients_writes(rig: CalDAVRig) -> None:
    """Writes by another client and deletions show up after the cursor."""
    day = _monday()
    _, cursor = await _sync(rig, None)
    rig.server.put(
        "alice",
        f"{rig.calendar_id}foreign.ics",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:other\r\nBEGIN:VEVENT\r\nUID:foreign-1\r\n"
        f"DTSTAMP:20260101T000000Z\r\nDTSTART:{day:%Y%m%d}T080000Z\r\n"
        f"DTEND:{day:%Y%m%d}T083000Z\r\nSUMMARY:from another client\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n",
    )
    pages, cursor = await _sync(rig, cursor)
    ups = [c for p in pages for c in p.changes if c.kind is ChangeKind.UPSERTED]
    assert [(c.event_id, c.event.summary if c.event else None) for c in ups] == [
        ("foreign.ics", "from another client")
    ]
    await rig.provider.delete_event(rig.session, rig.calendar_id, "foreign.ics")
    pages, _ = await _sync(rig, cursor)
    assert [(c.kind, c.event_id) for p in pages for c in p.changes] == [
        (ChangeKind.DELETED, "foreign.ics")
    ]


# -- writes and ETags -------------------------------------------------------------------------


async def test_stale_etag_is_a_conflict(rig: CalDAVRig) -> None:
    """update with an ETag another write replaced raises Conflict (412); the current
    ETag succeeds."""
    day = _monday()
    first = await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        EventDraft(summary="v1", start=_paris(day, 9), end=_paris(day, 10)),
        idempotency_key="etag-1",
    )
    assert first.etag
    second = await rig.provider.update_event(
        rig.session,
        rig.calendar_id,
        first.id,
        EventDraft(summary="v2", start=_paris(day, 9), end=_paris(day, 10)),
        etag=first.etag,
    )
    assert second.etag
    assert second.etag != first.etag

    with pytest.raises(Conflict):
        await rig.provider.update_event(
            rig.session,
            rig.calendar_id,
            first.id,
            EventDraft(summary="v3", start=_paris(day, 9), end=_paris(day, 10)),
            etag=first.etag,
        )
    (event,) = await _events(rig, _window(day, 1))
    assert event.summary == "v2"


async def test_create_is_idempotent_by_the_app_key(rig: CalDAVRig) -> None:
    """The UID and the resource name come from the key: a repeated create (If-None-Match
    412) returns the first event, never a second one."""
    day = _monday()
    draft = EventDraft(summary="once", start=_paris(day, 11), end=_paris(day, 12))
    uid, name = resource_name("booking-981")
    one = await rig.provider.create_event(
        rig.session, rig.calendar_id, draft, idempotency_key="booking-981"
    )
    two = await rig.provider.create_event(
        rig.session, rig.calendar_id, draft, idempotency_key="booking-981"
    )

    assert one.id == two.id == name
    assert one.ical_uid == uid
    assert len(await _events(rig, _window(day, 1))) == 1


# -- series ---------------------------------------------------------------------------------


async def test_editing_and_cancelling_occurrences(rig: CalDAVRig) -> None:
    """A weekly series expands into occurrences; editing one writes a RECURRENCE-ID
    override (an EXCEPTION keeping its original start and id), cancelling one an EXDATE;
    changes carry the master (with the EXDATE) and the override."""
    day = _monday()
    series = await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        EventDraft(
            summary="weekly",
            start=_paris(day, 9),
            end=_paris(day, 10),
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=4",),
        ),
        idempotency_key="series-1",
    )
    assert series.series_role is SeriesRole.MASTER
    window = _window(day, 28)
    occurrences = await _events(rig, window)
    assert [e.series_role for e in occurrences] == [SeriesRole.INSTANCE] * 4
    assert [e.start.as_utc() for e in occurrences] == [
        _paris(day + dt.timedelta(weeks=i), 9).as_utc() for i in range(4)
    ]
    second, third = occurrences[1], occurrences[2]
    assert second.id == f"{series.id}_{second.start.as_utc():%Y%m%dT%H%M%SZ}"

    moved_day = day + dt.timedelta(weeks=1, days=1)
    edited = await rig.provider.update_event(
        rig.session,
        rig.calendar_id,
        second.id,
        EventDraft(summary="moved", start=_paris(moved_day, 14), end=_paris(moved_day, 15)),
    )
    await rig.provider.delete_event(rig.session, rig.calendar_id, third.id)
    after = await _events(rig, window)

    assert edited.id == second.id
    assert edited.series_role is SeriesRole.EXCEPTION
    assert edited.original_start == second.start
    assert [(e.id, e.summary, e.series_role) for e in after] == [
        (occurrences[0].id, "weekly", SeriesRole.INSTANCE),
        (second.id, "moved", SeriesRole.EXCEPTION),
        (occurrences[3].id, "weekly", SeriesRole.INSTANCE),
    ]
    assert after[1].start.as_utc() == _paris(moved_day, 14).as_utc()
    pages, _ = await _sync(rig, None)
    stored = {c.event_id: c.event for p in pages for c in p.changes if c.event}
    master = stored[series.id]
    assert master.series_role is SeriesRole.MASTER
    assert "RRULE:FREQ=WEEKLY;COUNT=4" in master.recurrence
    assert any(line.startswith("EXDATE") for line in master.recurrence)
    assert stored[second.id].series_role is SeriesRole.EXCEPTION
    assert stored[second.id].recurring_event_id == series.id
    assert third.id not in stored


async def test_time_zones_vtimezone_and_all_day(rig: CalDAVRig) -> None:
    """A series written by another client in a VTIMEZONE zone keeps its wall clock across a
    daylight-saving change; all-day events (a date with no DTEND is one day) stay dates."""
    ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:other\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n"
        "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
        "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n"
        "DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"
        "BEGIN:VEVENT\r\nUID:tz-1\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART;TZID=Europe/Berlin:20261019T090000\r\n"
        "DTEND;TZID=Europe/Berlin:20261019T093000\r\n"
        "RRULE:FREQ=WEEKLY;COUNT=3\r\nSUMMARY:standup\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:day-1\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART;VALUE=DATE:20261024\r\nSUMMARY:holiday\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    # one resource per UID (RFC 4791): the all-day event goes into its own
    series, _, day = ics.partition("BEGIN:VEVENT\r\nUID:day-1")
    rig.server.put("alice", f"{rig.calendar_id}standup.ics", series + "END:VCALENDAR\r\n")
    head = ics.split("BEGIN:VTIMEZONE", maxsplit=1)[0]
    rig.server.put(
        "alice", f"{rig.calendar_id}holiday.ics", head + "BEGIN:VEVENT\r\nUID:day-1" + day
    )
    window = TimeRange(
        start=dt.datetime(2026, 10, 15, tzinfo=dt.UTC), end=dt.datetime(2026, 11, 10, tzinfo=dt.UTC)
    )
    events = await _events(rig, window)
    standups = [e for e in events if e.summary == "standup"]
    (holiday,) = [e for e in events if e.summary == "holiday"]

    assert [e.start.tzid for e in standups] == ["Europe/Berlin"] * 3
    assert [e.start.datetime.hour for e in standups if e.start.datetime] == [9, 9, 9]
    assert [e.start.as_utc().hour for e in standups] == [7, 8, 8]  # CEST, then CET
    assert holiday.start == EventTime.all_day(dt.date(2026, 10, 24))
    assert holiday.end == EventTime.all_day(dt.date(2026, 10, 25))


async def test_all_day_series_written_and_read_back(rig: CalDAVRig) -> None:
    """An all-day daily series written through the provider reads back as dates."""
    day = _monday()
    await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        EventDraft(
            summary="off",
            start=EventTime.all_day(day),
            end=EventTime.all_day(day + dt.timedelta(days=1)),
            recurrence=("RRULE:FREQ=DAILY;COUNT=3",),
        ),
        idempotency_key="all-day-series",
    )
    events = await _events(rig, _window(day, 5))

    assert [e.start for e in events] == [
        EventTime.all_day(day + dt.timedelta(days=i)) for i in range(3)
    ]
    assert all(e.end.is_all_day for e in events)


# -- free/busy ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "events"])
async def test_free_busy_from_the_server_or_the_events(radicale: RadicaleServer, mode: str) -> None:
    """free-busy-query where Radicale offers it, else built from the events: an opaque
    event is busy, a transparent one is not."""
    day = _monday()
    async with caldav_rig(radicale, "alice", options={"free_busy": mode}) as rig:
        await rig.provider.create_event(
            rig.session,
            rig.calendar_id,
            EventDraft(summary="busy", start=_paris(day, 9), end=_paris(day, 10)),
            idempotency_key=f"fb-busy-{mode}",
        )
        await rig.provider.create_event(
            rig.session,
            rig.calendar_id,
            EventDraft(
                summary="free",
                start=_paris(day, 13),
                end=_paris(day, 14),
                transparency=Transparency.TRANSPARENT,
            ),
            idempotency_key=f"fb-free-{mode}",
        )
        blocks = await rig.provider.free_busy(rig.session, [rig.calendar_id], _window(day, 1))
        asked = await rig.provider._free_busy_query(rig.session, rig.calendar_id, _window(day, 1))

    assert asked is not None, "Radicale answers free-busy-query: auto mode uses it"

    assert [(b.start, b.end, b.status) for b in blocks] == [
        (_paris(day, 9).as_utc(), _paris(day, 10).as_utc(), FreeBusyStatus.BUSY)
    ]


async def test_a_removed_series_takes_its_overrides_along(rig: CalDAVRig) -> None:
    """sync-collection names only a removed resource: the cursor remembers the series'
    overrides, so their deletions are reported too; an override another client drops is
    reported deleted (its occurrence is plain again)."""
    day = _monday()
    series = await rig.provider.create_event(
        rig.session,
        rig.calendar_id,
        EventDraft(
            summary="weekly",
            start=_paris(day, 9),
            end=_paris(day, 10),
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=4",),
        ),
        idempotency_key="series-gone",
    )
    first, second = (await _events(rig, _window(day, 28)))[:2]
    for occurrence, hour in ((first, 11), (second, 12)):
        start = occurrence.start.as_utc().date()
        await rig.provider.update_event(
            rig.session,
            rig.calendar_id,
            occurrence.id,
            EventDraft(summary="edited", start=_paris(start, hour), end=_paris(start, hour + 1)),
        )
    _, cursor = await _sync(rig, None)
    # another client drops the first override
    resource = await rig.provider._get(rig.session, rig.calendar_id, series.id)
    ical = resource.calendar
    dropped = first.start.datetime
    ical.subcomponents = [
        c
        for c in ical.subcomponents
        if "RECURRENCE-ID" not in c or c.decoded("RECURRENCE-ID") != dropped
    ]
    assert len(ical.walk("VEVENT")) == 2
    rig.server.put("alice", resource.href, ical.to_ical().decode())
    pages, cursor = await _sync(rig, cursor)
    deleted = [c.event_id for p in pages for c in p.changes if c.kind is ChangeKind.DELETED]
    assert deleted == [first.id]

    await rig.provider.delete_event(rig.session, rig.calendar_id, series.id)
    pages, _ = await _sync(rig, cursor)
    deleted = [c.event_id for p in pages for c in p.changes if c.kind is ChangeKind.DELETED]
    assert sorted(deleted) == sorted([series.id, second.id])


async def test_discovery_follows_the_well_known_redirect(radicale: RadicaleServer) -> None:
    """A server URL of ``/.well-known/caldav`` (RFC 6764) is followed to the principal."""
    async with caldav_rig(radicale, "alice") as rig:
        settings = ProviderSettings(base_urls={"api": radicale.url + ".well-known/caldav"})
        provider = CalDAVProvider(http=rig.provider.http, settings=settings)
        calendars = await provider.list_calendars(rig.session)

    assert rig.calendar_id in {c.id for c in calendars}
