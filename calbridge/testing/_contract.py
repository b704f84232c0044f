"""``ProviderContract``: the test class every provider plugin subclasses.

A subclass provides one fixture, ``contract_harness``, yielding a :class:`ContractHarness`
connected to the provider's sandbox; the inherited tests then prove the provider honours
calbridge's contract: calendars, window reads, paging, idempotent create, update, delete,
deletions visible in changes, cursors, changes that survive the sync round's spool (they
pickle), and notification verification that rejects forged
input::

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
from collections.abc import Awaitable, Callable, Sequence

import attrs
import pytest

from .. import errors
from ..models import Change, ChangeKind, Channel, Event, EventDraft, EventTime, TimeRange
from ..provider import ChannelRequest, Provider, Session, WebhookRequest
from ..sync._spool import ChangeSpool

__all__ = ["ContractHarness", "ProviderContract"]


async def _noop() -> None:
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@attrs.define(kw_only=True)
class ContractHarness:
    """What the contract needs to exercise one provider against its sandbox.

    Attributes:
        provider: a provider instance pointed at the sandbox.
        session: a session for a connected test account.
        calendar_id: a writable calendar of that account, empty at the start.
        settle: awaited after writes, before reads; lets asynchronous providers (Cronofy
            applies writes after a 202) catch up, e.g. by advancing the sandbox clock.
        now: the sandbox's current time (events are placed relative to it).
        page_size: a small page size forcing several pages.
        genuine_notification: produces the request the provider would really send for a
            change on ``channel`` (None when the provider cannot push).
        forged_notifications: variants of a genuine request that must be rejected
            (tampered body, wrong signature or token ...).
        body_signed: whether the provider signs notification bodies. When False (Graph's
            clientState travels inside an unsigned body) a body with a harmless extra byte
            is not expected to be rejected; ``forged_notifications`` must then tamper
            with what does authenticate the request.
    """

    provider: Provider
    session: Session
    calendar_id: str
    settle: Callable[[], Awaitable[None]] = _noop
    now: Callable[[], dt.datetime] = _now
    page_size: int = 5
    callback_url: str = "https://app.example.test/calbridge/hooks"
    genuine_notification: Callable[[Channel], Awaitable[WebhookRequest]] | None = None
    forged_notifications: Callable[[Channel, WebhookRequest], Sequence[WebhookRequest]] | None = (
        None
    )
    body_signed: bool = True


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
        """One key, two creates, one event; it reads back with its fields."""
        h = contract_harness
        key = self._key()
        draft = _draft(h.now(), 26, f"idem {key}")
        first = await h.provider.create_event(h.session, h.calendar_id, draft, idempotency_key=key)
        await h.settle()
        second = await h.provider.create_event(h.session, h.calendar_id, draft, idempotency_key=key)
        await h.settle()
        assert first.id == second.id
        events, _ = await _read(h, _window(h))
        mine = [e for e in events if e.summary == draft.summary]
        assert len(mine) == 1
        assert mine[0].id == first.id
        assert mine[0].start.as_utc() == draft.start.as_utc()
        assert mine[0].end.as_utc() == draft.end.as_utc()

    async def test_window_and_paging(self, contract_harness: ContractHarness) -> None:
        """Reads page by page, return every event in the window once and none outside."""
        h = contract_harness
        n = h.page_size * 2 + 1
        tag = uuid.uuid4().hex[:8]
        for i in range(n):
            await h.provider.create_event(
                h.session,
                h.calendar_id,
                _draft(h.now(), 30 + i, f"page {tag} {i}"),
                idempotency_key=self._key(),
            )
        outside = _draft(h.now(), 24 * 20, f"outside {tag}")
        await h.provider.create_event(
            h.session, h.calendar_id, outside, idempotency_key=self._key()
        )
        await h.settle()
        events, pages = await _read(h, _window(h))
        mine = [e for e in events if e.summary and e.summary.startswith(f"page {tag}")]
        assert sorted(e.summary or "" for e in mine) == sorted(f"page {tag} {i}" for i in range(n))
        assert len({e.id for e in events}) == len(events), "an event came twice"
        assert pages >= 3
        assert not [e for e in events if e.summary == outside.summary]

    async def test_update_and_delete(self, contract_harness: ContractHarness) -> None:
        """Updates show in reads; deletes remove; deleting twice succeeds."""
        h = contract_harness
        key = self._key()
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
        created = await h.provider.create_event(
            h.session, h.calendar_id, _draft(h.now(), 60, f"cursor {key}"), idempotency_key=key
        )
        await h.settle()
        full, cursor = await _sync(h, None)
        assert created.id in {c.event_id for c in full}
        await h.provider.update_event(
            h.session, h.calendar_id, created.id, _draft(h.now(), 61, f"moved {key}")
        )
        await h.settle()
        delta, cursor2 = await _sync(h, cursor)
        ups = [c for c in delta if c.kind is ChangeKind.UPSERTED and c.event_id == created.id]
        assert ups
        assert ups[-1].event is not None
        assert ups[-1].event.summary == f"moved {key}"
        _survives_the_spool(full)
        _survives_the_spool(delta)
        await h.provider.delete_event(h.session, h.calendar_id, created.id)
        await h.settle()
        delta2, _ = await _sync(h, cursor2)
        dels = [c for c in delta2 if c.kind is ChangeKind.DELETED and c.event_id == created.id]
        assert dels, "the deletion must be visible in changes after the cursor"
        _survives_the_spool(delta2)

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
