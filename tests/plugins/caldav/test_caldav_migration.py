"""Migration CalDAV -> Cronofy with the same phases as Google -> Cronofy: Radicale is the
legacy side, the Cronofy sandbox the target, its world mirroring the user's CalDAV
calendar (the same events, UIDs, series, moved and cancelled occurrences, all-day
event). The application's copy is built only from the delivered batches, keyed by their
identities, and checked after every phase: nothing lost, nothing told twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import attrs
import calbridge_caldav
import httpx
import pytest
from calbridge_caldav import resource_name
from calbridge_caldav.testing import RadicaleServer

from calbridge import BridgeConfig, CalBridge, EventDraft, EventTime, ProviderSettings
from calbridge.migration import Migrator
from calbridge.router import Phase
from calbridge.sandbox import Clock, World, build_app
from calbridge.store import generate_key
from calbridge.sync import drain
from calbridge.testing import fresh_plugin_host

from .conftest import USERS

CRONOFY_ID, CRONOFY_SECRET = "caldav-migration-cronofy", "caldav-migration-secret"
SANDBOX = "sandbox.test"
PARIS = ZoneInfo("Europe/Paris")
USER, EMAIL = "erin", "erin@example.com"
POLL = 301.0


class _Split(httpx.AsyncBaseTransport):
    """The sandboxes in process, Radicale over loopback."""

    def __init__(self, sandbox: httpx.AsyncBaseTransport) -> None:
        self.sandbox = sandbox
        self.network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == SANDBOX:
            return await self.sandbox.handle_async_request(request)
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


@attrs.define
class App:
    """The application's copy, from delivered batches only."""

    view: dict[str, tuple[str | None, dt.datetime]] = attrs.field(factory=dict)
    told: list[tuple[str, str, Any]] = attrs.field(factory=list)
    #: identity -> the provider whose batch last told it
    source: dict[str, str] = attrs.field(factory=dict)

    async def __call__(self, batch: Any) -> None:
        for event in batch.upserted:
            identity = batch.identity(event.id)
            value = (event.summary, event.start.as_utc())
            self.told.append(("u", identity, value))
            self.view[identity] = value
            self.source[identity] = batch.provider
        for event_id in batch.deleted:
            identity = batch.identity(event_id)
            self.told.append(("d", identity, None))
            self.view.pop(identity, None)

    def duplicated(self) -> list[tuple[str, str, Any]]:
        """Anything told twice in a row (the same upsert, or a deletion again)."""
        last: dict[str, tuple[str, Any]] = {}
        out = []
        for kind, identity, value in self.told:
            if last.get(identity) == (kind, value):
                out.append((kind, identity, value))
            last[identity] = (kind, value)
        return out


@attrs.define
class Rig:
    bridge: CalBridge
    world: World
    radicale: RadicaleServer
    http: httpx.AsyncClient
    app: App
    calendar_href: str
    world_calendar: str
    worker: Any = None

    async def work(self, seconds: float = 0.0) -> None:
        """Let time pass (polls fall due, Cronofy applies its writes) and run the jobs."""
        if self.worker is None:
            self.worker = self.bridge.worker(concurrency=1, poll_interval=0.01)
        for _ in range(3):
            await self.world.clock.advance(seconds) if seconds else None
            await drain(self.worker)

    async def connect_cronofy(self) -> None:
        url = await self.bridge.connect_url(USER, "cronofy", login_hint=EMAIL)
        answer = await self.http.get(url)
        assert answer.status_code == 302, answer.text
        params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
        await self.bridge.complete_connect("cronofy", params)


@pytest.fixture
async def rig(radicale: RadicaleServer, tmp_path: Path) -> AsyncIterator[Rig]:
    world = World(
        clock=Clock(start=dt.datetime.now(dt.UTC).replace(microsecond=0)),
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
    )
    world.add_application(CRONOFY_ID, CRONOFY_SECRET)
    world.add_user(EMAIL)
    host = fresh_plugin_host()
    sandbox = httpx.ASGITransport(app=build_app(world, dict(host.sandbox_factories())))
    transport = _Split(sandbox)
    base = f"http://{SANDBOX}/cronofy"
    config = BridgeConfig(
        database_url=f"sqlite:///{tmp_path / 'bridge.db'}",
        keys=f"k1:{generate_key()}",
        redirect_base="http://127.0.0.1:8000/oauth",
        providers={
            "caldav": ProviderSettings(base_urls={"api": radicale.url}),
            "cronofy": ProviderSettings(
                client_id=CRONOFY_ID,
                client_secret=CRONOFY_SECRET,
                base_urls={"api": base, "app": base},
                options={"clock": world.clock.now},
            ),
        },
    )
    bridge = CalBridge(
        config, host=host, transport=transport, clock=lambda: world.clock.now().timestamp()
    )
    app = App()
    bridge.on_changes(app)
    href = radicale.make_calendar(USER, "home", display_name="Home")
    async with httpx.AsyncClient(transport=sandbox) as http:
        yield Rig(
            bridge=bridge,
            world=world,
            radicale=radicale,
            http=http,
            app=app,
            calendar_href=href,
            world_calendar=world.primary_calendar(EMAIL).id,
        )
    await bridge.aclose()
    await transport.aclose()


def _paris(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=PARIS)


def _ical(value: dt.datetime) -> str:
    return f"TZID=Europe/Paris:{value:%Y%m%dT%H%M%S}"


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def seed(rig: Rig, monday: dt.date) -> dict[str, tuple[str | None, dt.datetime]]:
    """The same calendar on both sides; returns what the app must hold."""
    weeks = [_paris(monday + dt.timedelta(weeks=i), 9) for i in range(6)]
    moved_from, cancelled = weeks[1], weeks[2]
    moved_to = _paris(monday + dt.timedelta(weeks=1, days=1), 14)
    dentist = _paris(monday + dt.timedelta(days=2), 16)
    offsite = monday + dt.timedelta(days=4)
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:erin's phone\r\n"
    stamp = "DTSTAMP:20260101T000000Z\r\n"
    put = rig.radicale.put
    put(USER, f"{rig.calendar_href}dentist.ics", head + "BEGIN:VEVENT\r\nUID:dentist-1\r\n"
        f"{stamp}DTSTART;{_ical(dentist)}\r\nDTEND;{_ical(dentist + dt.timedelta(hours=1))}\r\n"
        "SUMMARY:Dentist\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")  # fmt: skip
    put(USER, f"{rig.calendar_href}standup.ics", head + "BEGIN:VEVENT\r\nUID:standup-1\r\n"
        f"{stamp}DTSTART;{_ical(weeks[0])}\r\nDTEND;{_ical(weeks[0] + dt.timedelta(minutes=30))}"
        f"\r\nRRULE:FREQ=WEEKLY;COUNT=6\r\nEXDATE;{_ical(cancelled)}\r\nSUMMARY:Standup\r\n"
        "END:VEVENT\r\nBEGIN:VEVENT\r\nUID:standup-1\r\n"
        f"{stamp}RECURRENCE-ID;{_ical(moved_from)}\r\nDTSTART;{_ical(moved_to)}\r\n"
        f"DTEND;{_ical(moved_to + dt.timedelta(minutes=30))}\r\nSUMMARY:Standup (moved)\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n")  # fmt: skip
    put(USER, f"{rig.calendar_href}offsite.ics", head + "BEGIN:VEVENT\r\nUID:offsite-1\r\n"
        f"{stamp}DTSTART;VALUE=DATE:{offsite:%Y%m%d}\r\nSUMMARY:Offsite\r\nEND:VEVENT\r\n"
        "END:VCALENDAR\r\n")  # fmt: skip
    # the target's world: the same calendar, as Cronofy would read it from the same server
    w, cal = rig.world, rig.world_calendar
    w.insert_event(
        cal, ical_uid="dentist-1", summary="Dentist",
        start=EventTime.zoned(dentist), end=EventTime.zoned(dentist + dt.timedelta(hours=1)),
    )  # fmt: skip
    master = w.insert_event(
        cal, ical_uid="standup-1", summary="Standup",
        start=EventTime.zoned(weeks[0]), end=EventTime.zoned(weeks[0] + dt.timedelta(minutes=30)),
        recurrence=("RRULE:FREQ=WEEKLY;COUNT=6", f"EXDATE;{_ical(cancelled)}"),
    )  # fmt: skip
    w.insert_event(
        cal, ical_uid="standup-1", summary="Standup (moved)",
        start=EventTime.zoned(moved_to), end=EventTime.zoned(moved_to + dt.timedelta(minutes=30)),
        recurring_event_id=master.id, original_start=EventTime.zoned(moved_from),
    )  # fmt: skip
    w.insert_event(
        cal, ical_uid="offsite-1", summary="Offsite",
        start=EventTime.all_day(offsite), end=EventTime.all_day(offsite + dt.timedelta(days=1)),
    )  # fmt: skip
    expected: dict[str, tuple[str | None, dt.datetime]] = {
        "dentist-1": ("Dentist", dentist.astimezone(dt.UTC)),
        "offsite-1": ("Offsite", _midnight(offsite)),
    }
    for week in weeks:
        if week == cancelled:
            continue
        summary, start = ("Standup (moved)", moved_to) if week == moved_from else ("Standup", week)
        expected[f"standup-1@{_stamp(week)}"] = (summary, start.astimezone(dt.UTC))
    return expected


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


@pytest.mark.timeout(300)
async def test_caldav_to_cronofy_loses_nothing_and_tells_nothing_twice(rig: Rig) -> None:
    """legacy (CalDAV, polled) -> shadow -> dual -> cutover -> retired (Cronofy): the app
    holds exactly the calendar's occurrences after every phase; connecting Cronofy tells
    it nothing; a booking created through CalDAV before the move is updated through
    Cronofy after it, under the same identity."""
    bridge, app = rig.bridge, rig.app
    today = rig.world.clock.now().date()
    monday = today + dt.timedelta(days=7 - today.weekday())
    expected = seed(rig, monday)

    # legacy: CalDAV, connected with an app password and polled
    await calbridge_caldav.connect(bridge, USER, username=USER, password=USERS[USER])
    migrator = Migrator(
        bridge.runtime, clean_period=0, clock=lambda: rig.world.clock.now().timestamp()
    )
    await migrator.enroll(USER)
    booking_at = _paris(monday + dt.timedelta(days=3), 11)
    draft = EventDraft(
        summary="Booking",
        start=EventTime.zoned(booking_at),
        end=EventTime.zoned(booking_at + dt.timedelta(hours=1)),
    )
    created = await bridge.create_event(USER, "primary", draft, key="booking-981")
    assert created.provider == "caldav"
    uid, _ = resource_name("booking-981")
    assert created.ical_uid == uid
    # ... which the target's world sees too, as Cronofy would on the same server
    rig.world.insert_event(
        rig.world_calendar, ical_uid=uid, summary="Booking",
        start=EventTime.zoned(booking_at), end=EventTime.zoned(booking_at + dt.timedelta(hours=1)),
    )  # fmt: skip
    expected["booking-981"] = ("Booking", booking_at.astimezone(dt.UTC))
    await rig.work(POLL)
    assert app.view == expected, "legacy"
    assert set(app.source.values()) == {"caldav"}

    # Cronofy authorised: it reports the same calendar, the app is told nothing
    told = len(app.told)
    await rig.connect_cronofy()
    await rig.work(POLL)
    assert len(app.told) == told, "connecting Cronofy delivered something"
    assert app.view == expected

    for phase in (Phase.SHADOW, Phase.DUAL):
        assert await migrator.move(USER, phase)
        await rig.work(POLL)
        assert app.view == expected, phase

    # a change on the calendar while both report it: told once
    dentist = expected["dentist-1"][1]
    rig.radicale.put(USER, f"{rig.calendar_href}dentist.ics", (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:phone\r\nBEGIN:VEVENT\r\nUID:dentist-1\r\n"
        f"DTSTAMP:20260102T000000Z\r\nSEQUENCE:1\r\nDTSTART:{_stamp(dentist)}\r\n"
        f"DTEND:{_stamp(dentist + dt.timedelta(hours=1))}\r\nSUMMARY:Dentist (confirmed)\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    ))  # fmt: skip
    (native,) = [e for e in rig.world.events(rig.world_calendar) if e.ical_uid == "dentist-1"]
    rig.world.update_event(rig.world_calendar, native.id, summary="Dentist (confirmed)")
    expected["dentist-1"] = ("Dentist (confirmed)", dentist)
    await rig.work(POLL)
    assert app.view == expected, "dual, after a change"

    parity = await migrator.check_parity(USER)
    assert parity.clean, parity.as_dict()
    assert await migrator.move(USER, Phase.CUTOVER)
    await rig.work(POLL)
    assert app.view == expected, "cutover"
    assert bridge.route(USER).provider == "cronofy"

    # the booking made through CalDAV is updated by its key through Cronofy
    moved = booking_at + dt.timedelta(hours=2)
    updated = await bridge.update_event(
        USER,
        "booking-981",
        EventDraft(
            summary="Booking (moved)",
            start=EventTime.zoned(moved),
            end=EventTime.zoned(moved + dt.timedelta(hours=1)),
        ),
    )
    assert updated.provider == "cronofy"
    expected["booking-981"] = ("Booking (moved)", moved.astimezone(dt.UTC))
    await rig.work(POLL)
    assert app.view == expected, "cutover, after the update"
    assert app.source["booking-981"] == "cronofy"
    assert [e.summary for e in rig.world.events(rig.world_calendar) if e.ical_uid == uid] == [
        "Booking (moved)"
    ], "the update reached the original event, no copy was made"

    assert await migrator.move(USER, Phase.RETIRED)
    await rig.work(POLL)
    assert app.view == expected, "retired"
    assert app.duplicated() == []
