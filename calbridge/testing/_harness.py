"""What :class:`calbridge.testing.ProviderContract` exercises: the harness a plugin's
``contract_harness`` fixture yields. Importable without pytest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs

from ..models import Channel, EventDraft
from ..provider import Provider, Session, WebhookRequest

__all__ = ["CalendarSeeder", "ContractHarness"]


async def _noop() -> None:
    return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CalendarSeeder(Protocol):
    """Writes into the service behind a provider that cannot write itself (its sandbox or
    fake server), so the contract can prove the provider's reads and changes."""

    async def create(self, draft: EventDraft) -> str:
        """Add an event to the harness's calendar; return the id the provider will read."""
        ...

    async def update(self, event_id: str, draft: EventDraft) -> None:
        """Replace the event's fields."""
        ...

    async def delete(self, event_id: str) -> None:
        """Remove the event."""
        ...


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
        seeder: writes events behind the provider's back; required when the provider
            declares ``write=False`` (and used only then).
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
    seeder: CalendarSeeder | None = None
