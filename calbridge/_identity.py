"""Identity across providers: one app event, one id per provider.

The id map ties the application's idempotency key to each provider's event id (Google's
client-supplied id, Graph's id for a transactionId, Cronofy's ``event_id`` for managed
events or ``event_uid`` for events it learnt from the native calendar). When a provider
has no entry yet (an event created through Google before the user moved to Cronofy), the
copy is found by iCalendar UID — in the synced cache first, then by one windowed read —
and recorded, so it is updated or deleted, never created twice.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from .models import Event, TimeRange
from .provider import Provider, Session

if TYPE_CHECKING:
    from .store import IdMapEntry, Store

__all__ = ["APP_KEY_PROPERTY", "find_by_ical_uid", "resolve_event_id"]

#: property carried by events the app created through calbridge (recognisable as its own)
APP_KEY_PROPERTY = "calbridge_key"

#: the widest window searched live when the event's time is unknown (Cronofy's sync window)
_SEARCH_PAST = dt.timedelta(days=42)
_SEARCH_FUTURE = dt.timedelta(days=201)


def cached_by_ical_uid(store: Store, account_id: str, ical_uid: str) -> Event | None:
    """A cached event of ``account_id`` with this iCalendar UID (series master first)."""
    return store.events.first_by_ical_uid(account_id, ical_uid)


async def find_by_ical_uid(
    provider: Provider,
    session: Session,
    calendar_id: str,
    ical_uid: str,
    *,
    around: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Event | None:
    """Find a provider's copy of an event by iCalendar UID with one windowed read."""
    current = now or dt.datetime.now(dt.UTC)
    if around is not None:
        window = TimeRange(start=around - dt.timedelta(days=2), end=around + dt.timedelta(days=2))
    else:
        window = TimeRange(start=current - _SEARCH_PAST, end=current + _SEARCH_FUTURE)
    async for page in provider.list_events(session, calendar_id, window):
        for event in page:
            if event.ical_uid == ical_uid and event.recurring_event_id is None:
                return event
    return None


async def resolve_event_id(
    store: Store,
    *,
    key: str,
    app_user_id: str,
    provider: Provider,
    session: Session,
    account_id: str,
    calendar_id: str,
    around: dt.datetime | None = None,
) -> tuple[str | None, dict[str, IdMapEntry]]:
    """The routed provider's event id for an app key (recording a newly found copy).

    Returns ``(event_id or None, all entries of the key)``.
    """
    from .store import IdMapEntry, offload

    entries = await offload(store.ids.get_ids, key)
    mine = entries.get(provider.name)
    if mine is not None:
        return str(mine.event_id), entries
    uids = {e.ical_uid for e in entries.values() if e.ical_uid}
    for uid in sorted(uids):
        found = await offload(cached_by_ical_uid, store, account_id, uid)
        if found is None:
            found = await find_by_ical_uid(provider, session, calendar_id, uid, around=around)
        if found is not None:
            await offload(
                store.ids.put_id,
                IdMapEntry(
                    key=key,
                    provider=provider.name,
                    app_user_id=app_user_id,
                    calendar_id=found.calendar_id,
                    event_id=found.id,
                    account_id=account_id,
                    ical_uid=found.ical_uid or uid,
                ),
            )
            return found.id, await offload(store.ids.get_ids, key)
    return None, entries
