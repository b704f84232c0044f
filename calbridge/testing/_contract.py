"""``ProviderContract``: the test class every provider plugin subclasses.

A subclass provides one fixture, ``contract_harness``, yielding a :class:`ContractHarness`
connected to the provider's sandbox; the inherited tests then prove the provider honours
calbridge's contract: calendars, window reads, paging, idempotent create, update, delete,
deletions visible in changes, cursors, changes that survive the sync round's spool (they
pickle), free/busy, and notification verification that rejects forged input.

Each test checks only what the provider's :class:`~calbridge.Capabilities` declare; what is
not declared must raise :class:`~calbridge.errors.NotSupported`. A provider that cannot
write (``write=False``) gives the harness a :class:`CalendarSeeder`, which puts events
straight into the service behind it, so its reads can still be proved::

    class TestMyProvider(calbridge.testing.ProviderContract):
        @pytest.fixture
        async def contract_harness(self):
            async with my_sandbox() as sb:
                yield calbridge.testing.ContractHarness(
                    provider=sb.provider, session=sb.session, calendar_id=sb.calendar_id)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import attrs
import pytest

from .. import errors
from ..models import Change, ChangeKind, Channel, Event, EventDraft, EventTime, TimeRange
from ..provider import ChannelRequest
from ..sync._spool import ChangeSpool
from ._harness import CalendarSeeder, ContractHarness

__all__ = ["CalendarSeeder", "ContractHarness", "ProviderContract"]


def _draft(base: dt.datetime, hours: float, summary: str) -> EventDraft:
    start = (base + dt.timedelta(hours=hours)).replace(microsecond=0, second=0)
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start.astimezone(dt.UTC), "UTC"),
        end=EventTime.zoned((start + dt.timedelta(minutes=30)).astimezone(dt.UTC), "UTC"),
    )


async def _read(h: ContractHarness, window: TimeRange) -> tuple[list[Event], int]:
    events: list[Event] = []
    pages = 0
    async for page in h.provider.list_events(
        h.session, h.calendar_id, window, page_size=h.page_size
    ):
        pages += 1
        events.extend(page)
    return events, pages


def _window(h: ContractHarness, days: int = 10) -> TimeRange:
    base = h.now().replace(hour=0, minute=0, second=0, microsecond=0)
    return TimeRange(start=base, end=base + dt.timedelta(days=days))


async def _sync(h: ContractHarness, cursor: str | None) -> tuple[list[Change], str]:
    changes: list[Change] = []
    final: str | None = None
    async for page in h.provider.changes(
        h.session, h.calendar_id, cursor, window=_window(h, 30), page_size=h.page_size
    ):
        assert final is None, "a page came after the page carrying the cursor"
        changes.extend(page.changes)
        if page.cursor is not None:
            final = page.cursor
    assert final is not None, "the last page must carry the next cursor"
    return changes, final


def _seeder(h: ContractHarness) -> CalendarSeeder:
    assert h.seeder is not None, (
        f"{h.provider.name!r} declares write=False: its harness must give a seeder "
        "(calbridge.testing.CalendarSeeder) that writes into its sandbox"
    )
    return h.seeder


async def _create(h: ContractHarness, draft: EventDraft, key: str) -> str:
    """An event on the harness calendar: written by the provider when it can write."""
    if h.provider.capabilities.write:
        created = await h.provider.create_event(
            h.session, h.calendar_id, draft, idempotency_key=key
        )
        return created.id
    return await _seeder(h).create(draft)


async def _update(h: ContractHarness, event_id: str, draft: EventDraft) -> None:
    if h.provider.capabilities.write:
        await h.provider.update_event(h.session, h.calendar_id, event_id, draft)
    else:
        await _seeder(h).update(event_id, draft)


async def _delete(h: ContractHarness, event_id: str) -> None:
    if h.provider.capabilities.write:
        await h.provider.delete_event(h.session, h.calendar_id, event_id)
    else:
        await _seeder(h).delete(event_id)


def _survives_the_spool(changes: Sequence[Change]) -> None:
    """A sync round keeps what it reads in a spool that writes changes to a temporary file
    (pickled) past a bound: each change must come back from it equal."""
    with ChangeSpool(hold=1) as spool:
        for change in changes:
            spool.add([change])
        assert spool.spilled == len(changes), "changes must pickle (see calbridge.sync)"
        back = {c.event_id: c for c in spool.latest()}
    latest = {c.event_id: c for c in changes}
    assert back == latest, "changes must come back from the sync spool equal"


class ProviderContract:
    """Inherit and provide the ``contract_harness`` fixture."""

    pytestmark = pytest.mark.asyncio

    @staticmethod
    def _key() -> str:
        return f"contract-{uuid.uuid4()}"

    async def test_lists_the_calendar(self, contract_harness: ContractHarness) -> None:
        """The writable calendar is among the account's calendars."""
        cals = await contract_harness.provider.list_calendars(contract_harness.session)
        assert contract_harness.calendar_id in {c.id for c in cals}
        assert all(c.provider == contract_harness.provider.name for c in cals)

    async def test_create_is_idempotent_and_readable(
        self, contract_harness: ContractHarness
    ) -> None:
        """One key, two creates, one event (when ``idempotent_create``); it reads back with
        its fields. A provider that cannot write refuses with NotSupported."""
        h = contract_harness
        key = self._key()
        draft = _draft(h.now(), 26, f"idem {key}")
        caps = h.provider.capabilities
        if caps.write:
            first = await h.provider.create_event(
                h.session, h.calendar_id, draft, idempotency_key=key
            )
            first_id = first.id
            await h.settle()
            if caps.idempotent_create:
                second = await h.provider.create_event(
                    h.session, h.calendar_id, draft, idempotency_key=key
                )
                await h.settle()
                assert first.id == second.id
        else:
            with pytest.raises(errors.NotSupported):
                await h.provider.create_event(h.session, h.calendar_id, draft, idempotency_key=key)
            first_id = await _seeder(h).create(draft)
            await h.settle()
        events, _ = await _read(h, _window(h))
        mine = [e for e in events if e.summary == draft.summary]
        assert len(mine) == 1
        assert mine[0].id == first_id
        assert mine[0].calendar_id == h.calendar_id
        assert mine[0].provider == h.provider.name
        assert mine[0].start.as_utc() == draft.start.as_utc()
        assert mine[0].end.as_utc() == draft.end.as_utc()

    async def test_window_and_paging(self, contract_harness: ContractHarness) -> None:
        """Reads page by page, return every event in the window once and none outside."""
        h = contract_harness
        n = h.page_size * 2 + 1
        tag = uuid.uuid4().hex[:8]
        for i in range(n):
            await _create(h, _draft(h.now(), 30 + i, f"page {tag} {i}"), self._key())
        outside = _draft(h.now(), 24 * 20, f"outside {tag}")
        await _create(h, outside, self._key())
        await h.settle()
        events, pages = await _read(h, _window(h))
        mine = [e for e in events if e.summary and e.summary.startswith(f"page {tag}")]
        assert sorted(e.summary or "" for e in mine) == sorted(f"page {tag} {i}" for i in range(n))
        assert len({e.id for e in events}) == len(events), "an event came twice"
        assert pages >= 3
        assert not [e for e in events if e.summary == outside.summary]

    async def test_update_and_delete(self, contract_harness: ContractHarness) -> None:
        """Updates show in reads; deletes remove; deleting twice succeeds. A provider that
        cannot write refuses both with NotSupported."""
        h = contract_harness
        key = self._key()
        if not h.provider.capabilities.write:
            with pytest.raises(errors.NotSupported):
                await h.provider.update_event(
                    h.session, h.calendar_id, "any", _draft(h.now(), 51, f"after {key}")
                )
            with pytest.raises(errors.NotSupported):
                await h.provider.delete_event(h.session, h.calendar_id, "any")
            return
        created = await h.provider.create_event(
            h.session, h.calendar_id, _draft(h.now(), 50, f"before {key}"), idempotency_key=key
        )
        await h.settle()
        await h.provider.update_event(
            h.session, h.calendar_id, created.id, _draft(h.now(), 51, f"after {key}")
        )
        await h.settle()
        events, _ = await _read(h, _window(h))
        by_id = {e.id: e for e in events}
        assert by_id[created.id].summary == f"after {key}"
        await h.provider.delete_event(h.session, h.calendar_id, created.id)
        await h.settle()
        events, _ = await _read(h, _window(h))
        assert created.id not in {e.id for e in events}
        await h.provider.delete_event(h.session, h.calendar_id, created.id)

    async def test_changes_follow_a_cursor(self, contract_harness: ContractHarness) -> None:
        """A full read gives a cursor; later upserts and deletions come after it."""
        h = contract_harness
        if not h.provider.capabilities.incremental_sync:
            with pytest.raises(errors.NotSupported):
                await _sync(h, None)
            return
        key = self._key()
        created_id = await _create(h, _draft(h.now(), 60, f"cursor {key}"), key)
        await h.settle()
        full, cursor = await _sync(h, None)
        assert created_id in {c.event_id for c in full}
        await _update(h, created_id, _draft(h.now(), 61, f"moved {key}"))
        await h.settle()
        delta, cursor2 = await _sync(h, cursor)
        ups = [c for c in delta if c.kind is ChangeKind.UPSERTED and c.event_id == created_id]
        assert ups
        assert ups[-1].event is not None
        assert ups[-1].event.summary == f"moved {key}"
        _survives_the_spool(full)
        _survives_the_spool(delta)
        await _delete(h, created_id)
        await h.settle()
        delta2, _ = await _sync(h, cursor2)
        dels = [c for c in delta2 if c.kind is ChangeKind.DELETED and c.event_id == created_id]
        assert dels, "the deletion must be visible in changes after the cursor"
        _survives_the_spool(delta2)

    async def test_free_busy_covers_an_event(self, contract_harness: ContractHarness) -> None:
        """When ``free_busy`` is declared, an opaque event shows as a busy block of its
        calendar; otherwise free/busy raises NotSupported."""
        h = contract_harness
        window = _window(h)
        if not h.provider.capabilities.free_busy:
            with pytest.raises(errors.NotSupported):
                await h.provider.free_busy(h.session, [h.calendar_id], window)
            return
        draft = _draft(h.now(), 70, f"busy {self._key()}")
        await _create(h, draft, self._key())
        await h.settle()
        blocks = await h.provider.free_busy(h.session, [h.calendar_id], window)
        start, end = draft.start.as_utc(), draft.end.as_utc()
        assert any(
            b.calendar_id == h.calendar_id and b.start <= start and b.end >= end for b in blocks
        ), "the event's time must be inside a busy block of its calendar"

    async def test_notifications_verify_and_reject_forgeries(
        self, contract_harness: ContractHarness
    ) -> None:
        """A genuine notification verifies; forged ones and unknown channels are rejected."""
        h = contract_harness
        if not h.provider.capabilities.push:
            with pytest.raises(errors.NotSupported):
                await h.provider.subscribe(h.session, ChannelRequest(callback_url=h.callback_url))
            return
        assert h.genuine_notification is not None, "a push provider's harness must sign"
        channel = await h.provider.subscribe(
            h.session,
            ChannelRequest(callback_url=h.callback_url, calendar_ids=(h.calendar_id,)),
        )

        async def known(channel_id: str) -> Channel | None:
            return channel if channel_id == channel.id else None

        async def nobody(channel_id: str) -> Channel | None:
            return None

        genuine = await h.genuine_notification(channel)
        parsed = await h.provider.verify_notification(genuine, known)
        assert parsed
        assert all(n.provider == h.provider.name for n in parsed)
        with pytest.raises(errors.NotificationRejected):
            await h.provider.verify_notification(genuine, nobody)
        tampered = attrs.evolve(genuine, body=genuine.body + b" ")
        forged = [*(h.forged_notifications(channel, genuine) if h.forged_notifications else ())]
        if genuine.body and h.body_signed:
            forged.append(tampered)
        assert forged, "the harness must offer at least one forged request"
        for bad in forged:
            with pytest.raises(errors.NotificationRejected):
                await h.provider.verify_notification(bad, known)
        await h.provider.unsubscribe(h.session, channel)
