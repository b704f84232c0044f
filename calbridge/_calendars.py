"""Calendar references: the app's ``"primary"`` or a calendar id of any of the user's
accounts, translated to the routed account's calendar id."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from .errors import NotFound
from .models import Calendar

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .router import Decision

__all__ = ["CalendarResolver"]

#: seconds an account's calendar list is reused before it is read again
CALENDARS_TTL: Final = 300.0


class CalendarResolver:
    """Each account's calendars (read from its provider, kept :data:`CALENDARS_TTL` s in
    this process) and the translation of app calendar references."""

    def __init__(self, runtime: Runtime, *, ttl: float = CALENDARS_TTL) -> None:
        self.runtime = runtime
        self.ttl = ttl
        self._cache: dict[str, tuple[float, list[Calendar]]] = {}

    async def of_account(self, account_id: str, *, fresh: bool = False) -> list[Calendar]:
        """The account's calendars (``fresh``: read now, whatever is kept)."""
        hit = self._cache.get(account_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        account = await self.runtime.aaccount(account_id)
        provider = self.runtime.provider(account.provider)
        calendars = await provider.list_calendars(self.runtime.session(account))
        self._cache[account_id] = (now + self.ttl, calendars)
        return calendars

    def forget(self, account_id: str) -> None:
        """Drop what is kept of the account's calendars (it was removed)."""
        self._cache.pop(account_id, None)

    async def resolve(self, decision: Decision, ref: str) -> str:
        """Translate an app calendar reference to the routed account's calendar id.

        ``"primary"`` is each provider's primary calendar; an id from another of the
        user's accounts maps to the routed account's calendar of the same name (or the
        primary one when the other was primary).
        """
        mine = await self.of_account(decision.account_id)
        if ref == "primary":
            primary = next((c for c in mine if c.primary), mine[0] if mine else None)
            if primary is None:
                raise NotFound("the account has no calendar", provider=decision.provider)
            return primary.id
        if any(c.id == ref for c in mine):
            return ref
        facts = await self.runtime.auser_facts(decision.app_user_id)
        for other in facts.accounts:
            if other.account_id == decision.account_id or not other.active:
                continue
            theirs = await self.of_account(other.account_id)
            source = next((c for c in theirs if c.id == ref), None)
            if source is None:
                continue
            if source.primary:
                return await self.resolve(decision, "primary")
            same = next((c for c in mine if c.name == source.name), None)
            if same is not None:
                return same.id
        raise NotFound(
            f"calendar {ref!r} is not one of the user's calendars at {decision.provider}",
            provider=decision.provider,
        )
