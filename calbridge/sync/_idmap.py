"""Keep app idempotency keys pointing at their events while a sync round commits.

An event the app created through calbridge has an idempotency key in the id map. When sync
sees the event under a new id (Cronofy applies writes asynchronously; a migration copies
events to another provider), the key follows it: matched by the provider event id, or
else by iCalendar UID when exactly one of the user's entries for this provider has it.

Instances and exceptions of a recurring series share their series' iCalendar UID (Google
gives a moved occurrence the master's ``iCalUID``), so they are matched by id only: a key
names the series, and a moved occurrence must not take it from the master.

The round maps a chunk of events at a time: :meth:`IdMapper.map` loads every entry the
chunk could match in a few queries, then decides event by event in arrival order against
that in-memory copy, which it keeps up to date as it writes, so each event sees what the
events before it wrote, as if each had been looked up on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..models import Event, SeriesRole
from ..store import Connection, IdMapEntry, Store

__all__ = ["IdMapper"]

_IN_SERIES = (SeriesRole.INSTANCE, SeriesRole.EXCEPTION)


class IdMapper:
    """The id mapping of one round: provider, app user and account are the round's."""

    def __init__(self, store: Store, provider: str, app_user_id: str, account_id: str) -> None:
        self._store = store
        self._provider = provider
        self._user = app_user_id
        self._account = account_id

    def map(self, conn: Connection, events: Sequence[Event]) -> int:
        """Point the keys of these events at them; returns how many entries changed."""
        if not events:
            return 0
        uids = sorted(
            {e.ical_uid for e in events if e.ical_uid and e.series_role not in _IN_SERIES}
        )
        known = self._store.ids.find_ids_for_events(
            self._provider, [e.id for e in events], uids, app_user_id=self._user, conn=conn
        )
        view = _View(known)
        written = 0
        for event in events:
            entry = view.by_event(event.id)
            if entry is None and event.ical_uid and event.series_role not in _IN_SERIES:
                candidates = [
                    e
                    for e in view.by_uid(event.ical_uid)
                    if e.app_user_id == self._user and e.account_id in (None, self._account)
                ]
                entry = candidates[0] if len(candidates) == 1 else None
            if entry is None:
                continue
            updated = IdMapEntry(
                key=entry.key,
                provider=entry.provider,
                app_user_id=entry.app_user_id,
                account_id=entry.account_id or self._account,
                calendar_id=event.calendar_id,
                event_id=event.id,
                ical_uid=event.ical_uid or entry.ical_uid,
            )
            if updated != entry:
                self._store.ids.put_id(updated, conn=conn)
                view.replace(entry, updated)
                written += 1
        return written


class _View:
    """The entries a chunk can match, indexed by event id and by iCalendar UID (one
    provider's: keys are unique among them)."""

    def __init__(self, entries: Sequence[IdMapEntry]) -> None:
        self._events: dict[str, dict[str, IdMapEntry]] = {}
        self._uids: dict[str, dict[str, IdMapEntry]] = {}
        for entry in entries:
            self._add(entry)

    def _add(self, entry: IdMapEntry) -> None:
        self._events.setdefault(entry.event_id, {})[entry.key] = entry
        if entry.ical_uid:
            self._uids.setdefault(entry.ical_uid, {})[entry.key] = entry

    def by_event(self, event_id: str) -> IdMapEntry | None:
        """The entry naming this event (the first key when several do)."""
        found = self._events.get(event_id)
        return found[min(found)] if found else None

    def by_uid(self, uid: str) -> list[IdMapEntry]:
        """Entries with this iCalendar UID, by key."""
        found = self._uids.get(uid, {})
        return [found[k] for k in sorted(found)]

    def replace(self, old: IdMapEntry, new: IdMapEntry) -> None:
        self._events.get(old.event_id, {}).pop(old.key, None)
        if old.ical_uid:
            self._uids.get(old.ical_uid, {}).pop(old.key, None)
        self._add(new)
