"""The application feed: each distinct change reaches the app once, whoever reported it.

During a migration two providers front the same native calendar (the legacy one and
Cronofy), and both report every change. The feed remembers, per app user and event
identity (iCalendar UID, plus the original start for occurrences of a series), a
fingerprint of what the application was last told, and lets a batch through only with
what is new. So a change made while a user is switched from legacy to Cronofy reaches the
app exactly once: from whichever provider reports it first.

The state is recorded only after the application's callbacks succeeded, so a failed
delivery is retried (at-least-once) without being filtered away.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import attrs

from ._occurrences import occurrence_identity, stamp
from .models import Event

if TYPE_CHECKING:
    from .store import FeedRecord, StoreRuntime

__all__ = ["AppFeed", "event_fingerprint", "event_identity"]


def event_identity(event: Event) -> str:
    """The provider-independent identity of an event or occurrence (iCalendar UID, and for
    an occurrence of a series its original start): see :mod:`calbridge._occurrences`."""
    return occurrence_identity(event)


def event_fingerprint(event: Event) -> str:
    """A digest of the fields both providers report alike."""
    fields = {
        "summary": event.summary or "",
        "location": event.location or "",
        "start": stamp(event.start),
        "end": stamp(event.end),
        "status": str(event.status),
        "transparency": str(event.transparency),
        "recurrence": sorted(event.recurrence),
        "attendees": sorted((a.email.lower(), str(a.response)) for a in event.attendees),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@attrs.define
class AppFeed:
    """Filters change batches down to what the application has not been told yet."""

    runtime: StoreRuntime

    def select(self, batch: Any) -> tuple[Any, list[FeedRecord]]:
        """The part of ``batch`` that is news, and the feed rows to record after delivery.

        Each id is told under the identity the app already knows it by: the one its
        provider id was told under, else its cross-provider identity or its key identity
        if the app was told either (an event first reported by another provider); a new
        event takes its key identity where it has one, else its cross-provider identity
        (``ChangeBatch.identities`` / ``key_identities``). So a deletion after a migration
        reaches the app under the identity it knows. A deletion of something the app was
        never told about is left out. Returns ``(filtered batch, records)``; records are
        ``(identity, provider event id, fingerprint or None for a deletion, is_deletion)``.
        """
        by_uid: dict[str, str] = dict(batch.identities)
        by_key: dict[str, str] = dict(batch.key_identities)
        for e in batch.upserted:
            by_uid.setdefault(e.id, event_identity(e))
        every = [e.id for e in batch.upserted] + list(batch.deleted)
        known, state = self.runtime.store.feed.told(
            app_user_id=batch.app_user_id,
            account_id=batch.account_id,
            deleted_ids=list(batch.deleted),
            identities=set(by_uid.values()) | set(by_key.values()),
        )
        told: dict[str, str] = {}
        for event_id in every:
            # the identity the app already knows wins; a new event takes its key if any
            options = [known.get(event_id), by_uid.get(event_id), by_key.get(event_id)]
            told[event_id] = next(
                (str(o) for o in options if o and o in state),
                by_key.get(event_id) or by_uid.get(event_id) or event_id,
            )
        upserted: list[Event] = []
        deleted: list[str] = []
        records: list[FeedRecord] = []
        for event in batch.upserted:
            ident, fp = told[event.id], event_fingerprint(event)
            records.append((ident, event.id, fp, False))
            if state.get(ident) != (fp, False):
                upserted.append(event)
                state[ident] = (fp, False)
        for event_id in batch.deleted:
            gone = told[event_id]
            previous = state.get(gone)
            if previous is None:
                continue  # the app never heard of it
            records.append((gone, event_id, None, True))
            if not previous[1]:
                deleted.append(event_id)
                state[gone] = (previous[0], True)
        kept = {i: told[i] for i in [e.id for e in upserted] + deleted}
        filtered = attrs.evolve(
            batch, upserted=tuple(upserted), deleted=tuple(deleted), identities=kept
        )
        return filtered, records

    def record(self, batch: Any, records: list[FeedRecord]) -> None:
        """Remember what the application was told (after its callbacks succeeded)."""
        if not records:
            return
        self.runtime.store.feed.record(
            app_user_id=batch.app_user_id,
            account_id=batch.account_id,
            records=records,
            now=int(self.runtime.clock()),
        )
