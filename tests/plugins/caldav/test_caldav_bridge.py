"""A CalDAV account through the bridge: connected with an app password (kept sealed in
the vault), polled (CalDAV cannot push) into the same change stream as the other
providers, and read in full again when the server forgot its sync token."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import calbridge_caldav
import pytest
from calbridge_caldav.testing import RadicaleServer

import calbridge
from calbridge import AccountStatus, CalBridge, ProviderSettings
from calbridge.auth.testing import StatusHookRecorder
from calbridge.errors import ReauthRequired
from calbridge.store import generate_key
from calbridge.sync import drain
from calbridge.testing import fresh_plugin_host

from .conftest import USERS


@attrs.define
class Clock:
    now: float = attrs.field(factory=time.time)

    def __call__(self) -> float:
        return self.now


@attrs.define
class Rig:
    bridge: CalBridge
    clock: Clock
    db: Path
    statuses: StatusHookRecorder
    batches: list[Any] = attrs.field(factory=list)
    worker: Any = None

    async def work(self) -> None:
        if self.worker is None:
            self.worker = self.bridge.worker(concurrency=1, poll_interval=0.01)
        await drain(self.worker)

    async def next_poll(self) -> None:
        self.clock.now += self.bridge.config.poll_interval + 1
        await self.work()

    def upserts(self, summary: str) -> list[Any]:
        return [e for b in self.batches for e in b.upserted if e.summary == summary]


@pytest.fixture
async def bridge_rig(radicale: RadicaleServer, tmp_path: Path) -> AsyncIterator[Rig]:
    db = tmp_path / "bridge.db"
    config = calbridge.BridgeConfig(
        database_url=f"sqlite:///{db}",
        keys=f"k1:{generate_key()}",
        redirect_base="http://127.0.0.1:8000/oauth",
        providers={"caldav": ProviderSettings(base_urls={"api": radicale.url})},
    )
    clock = Clock()
    statuses = StatusHookRecorder()
    host = fresh_plugin_host(statuses)
    bridge = CalBridge(config, host=host, clock=clock)
    rig = Rig(bridge=bridge, clock=clock, db=db, statuses=statuses)

    async def inbox(batch: Any) -> None:
        rig.batches.append(batch)

    bridge.on_changes(inbox)
    try:
        yield rig
    finally:
        await bridge.aclose()


def _ics(uid: str, summary: str, start: dt.datetime, rrule: str | None = None) -> str:
    fmt = "%Y%m%dT%H%M%SZ"
    end = start + dt.timedelta(minutes=30)
    rule = f"RRULE:{rrule}\r\n" if rrule else ""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:phone\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{start:{fmt}}\r\n"
        f"DTEND:{end:{fmt}}\r\n{rule}SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def _soon(hours: int) -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return now + dt.timedelta(hours=hours)


async def test_a_caldav_account_is_polled_into_the_change_stream(
    radicale: RadicaleServer, bridge_rig: Rig
) -> None:
    """connect() checks the app password, seals it in the vault and starts polling; a
    change by another client reaches the app after the next poll, a series as its
    occurrences, and a forgotten sync token means a full read that tells nothing twice."""
    rig, bridge = bridge_rig, bridge_rig.bridge
    home = radicale.make_calendar("carol", "home", display_name="Home")
    account = await calbridge_caldav.connect(
        bridge, "carol", username="carol", password=USERS["carol"]
    )
    assert account.id is not None

    assert await bridge.subscribe("carol") == {account.id: "poll"}
    assert bridge.route("carol").provider == "caldav"
    stored = bridge.store.credentials.get_tokens(account.id)
    assert stored is not None
    assert stored.tokens.extra["username"] == "carol"
    assert stored.tokens.access_token.reveal() == USERS["carol"]
    assert USERS["carol"].encode() not in rig.db.read_bytes(), "the password is sealed"
    await rig.work()

    radicale.put("carol", f"{home}phone-1.ics", _ics("phone-1", "from the phone", _soon(26)))
    radicale.put(
        "carol",
        f"{home}phone-2.ics",
        _ics("phone-2", "weekly", _soon(50), rrule="FREQ=WEEKLY;COUNT=3"),
    )
    await rig.work()
    assert rig.upserts("from the phone") == [], "nothing before the next poll"
    await rig.next_poll()

    assert len(rig.upserts("from the phone")) == 1
    weekly = rig.upserts("weekly")
    assert len(weekly) == 3
    assert {e.ical_uid for e in weekly} == {"phone-2"}
    calendars = await bridge.calendars("carol")
    assert [c.name for c in calendars] == ["Home"]

    # the server forgets the token: SyncCursorExpired, then a full read of the calendar
    cursor = bridge.store.events.get_cursor(account.id, home)
    assert cursor
    bridge.store.events.set_cursor(account.id, home, cursor[: cursor.rindex("/") + 1] + "0" * 64)
    radicale.put("carol", f"{home}phone-3.ics", _ics("phone-3", "after the reset", _soon(28)))
    await rig.next_poll()

    assert len(rig.upserts("after the reset")) == 1
    assert len(rig.upserts("from the phone")) == 1, "the full read told nothing twice"
    assert len(rig.upserts("weekly")) == 3
    assert bridge.store.events.get_cursor(account.id, home) not in (None, cursor)


async def test_connect_refuses_a_wrong_password_and_stores_nothing(bridge_rig: Rig) -> None:
    """The server's 401 is ReauthRequired before any account exists."""
    with pytest.raises(ReauthRequired):
        await calbridge_caldav.connect(
            bridge_rig.bridge, "dave", username="dave", password="not-the-app-password"
        )

    assert await bridge_rig.bridge.accounts("dave") == []


async def test_a_revoked_app_password_needs_reauthorization(
    radicale: RadicaleServer, bridge_rig: Rig
) -> None:
    """The user deletes the app password at the server: the next poll's 401 makes the
    session re-check the credentials, the account needs re-authorization (the hook says
    so once) and connecting again with a new app password makes it active."""
    rig, bridge = bridge_rig, bridge_rig.bridge
    radicale.make_calendar("frank", "home")
    account = await calbridge_caldav.connect(
        bridge, "frank", username="frank", password=USERS["frank"]
    )
    assert account.id is not None
    await rig.work()
    radicale.set_password("frank", "a-new-app-password")
    # credentials are re-checked an hour after they were stored, or on a 401
    await rig.next_poll()

    reloaded = bridge.store.accounts.get_account(account.id)
    assert reloaded is not None
    assert reloaded.status is AccountStatus.NEEDS_REAUTH
    assert [(a.id, str(a.status), why) for a, _, why in rig.statuses.calls] == [
        (account.id, "needs_reauth", "invalid_grant")
    ]
    again = await calbridge_caldav.connect(
        bridge, "frank", username="frank", password="a-new-app-password"
    )
    assert again.id == account.id
    assert again.status is AccountStatus.ACTIVE
