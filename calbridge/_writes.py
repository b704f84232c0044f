"""Idempotent writes: the app's key to each provider's event, create / update / delete.

Every write carries the application's idempotency key. A create first claims the key in
the store (a SHA-256 of the request, never the draft): the same key with another draft or
calendar is an :class:`~calbridge.errors.IdempotencyConflict` before any provider call,
also when two first creates race; a create the provider refuses outright releases it.
Then the routed provider's copy is looked for (id map, iCalendar UID); only when no
provider holds the event is it created, with the key as the provider's own idempotency
token. Update and delete resolve the key to the routed provider's event id, so an event
created through one provider before a migration is updated or deleted through the other
after it. Observers (:mod:`calbridge._activity`) hear of every write.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence

import attrs
import cattrs

from ._activity import ActivityObserver, Write
from ._calendars import CalendarResolver
from ._identity import APP_KEY_PROPERTY, resolve_event_id
from ._runtime import Runtime
from ._serialization import make_converter
from .errors import IdempotencyConflict, InvalidRequest, NotFound, NotSupported, ReauthRequired
from .models import Event, EventDraft
from .provider import Provider, Session
from .router import Decision
from .store import IdMapEntry, offload

__all__ = ["EventWriter"]


class EventWriter:
    """Creates, updates and deletes events under the app's idempotency keys.

    ``route`` decides who serves a user (the bridge's, so that its tracing sees the
    decision); ``observers`` are told of every write, on a store thread.
    """

    def __init__(
        self,
        runtime: Runtime,
        calendars: CalendarResolver,
        route: Callable[[str], Awaitable[Decision]],
        observers: Sequence[ActivityObserver],
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.calendars = calendars
        self.route = route
        self.observers = observers

    async def create(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, *, key: str
    ) -> Event:
        """See :meth:`calbridge.CalBridge.create_event`."""
        fingerprint = _request_fingerprint(calendar_id, draft)
        claimed = await offload(self.store.ids.claim_key, key, fingerprint, app_user_id=app_user_id)
        if not claimed:
            raise IdempotencyConflict(key)
        try:
            target = await self._create_target(app_user_id, calendar_id, draft, key)
        except Exception:  # nothing reached the provider
            await offload(self.store.ids.release_key, key, fingerprint)
            raise
        if isinstance(target, Event):
            return target  # made earlier under this key
        decision, provider, session, cal = target
        marked = attrs.evolve(draft, properties={**draft.properties, APP_KEY_PROPERTY: key})
        try:
            event = await provider.create_event(session, cal, marked, idempotency_key=key)
        except (InvalidRequest, NotFound, NotSupported, ReauthRequired):
            await offload(self.store.ids.release_key, key, fingerprint)  # refused: nothing made
            raise
        await offload(
            self.store.ids.put_id,
            IdMapEntry(
                key=key,
                provider=decision.provider,
                app_user_id=app_user_id,
                calendar_id=cal,
                event_id=event.id,
                account_id=decision.account_id,
                ical_uid=event.ical_uid,
            ),
        )
        await offload(self._wrote, app_user_id, key, "create", decision.account_id, cal)
        return event

    async def _create_target(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, key: str
    ) -> Event | tuple[Decision, Provider, Session, str]:
        """Where a create under ``key`` goes (route, provider, session, calendar), or the
        event an earlier create under it made."""
        decision = await self.route(app_user_id)
        provider = self.runtime.provider(decision.provider)
        session = await self.runtime.asession(decision.account_id)
        cal = await self.calendars.resolve(decision, calendar_id)
        existing, entries = await resolve_event_id(
            self.store,
            key=key,
            app_user_id=app_user_id,
            provider=provider,
            session=session,
            account_id=decision.account_id,
            calendar_id=cal,
            around=draft.start.as_utc(),
        )
        if existing is not None:
            cached = await offload(self.store.events.get_event, decision.account_id, cal, existing)
            if isinstance(cached, Event):
                return cached
        if existing is None and entries:
            # another provider holds the event, and this one has not seen it yet
            raise NotFound(
                f"event {key!r} exists at {', '.join(sorted(entries))} but is not yet "
                f"visible through {decision.provider}; retry after its next sync",
                provider=decision.provider,
            )
        return decision, provider, session, cal

    async def update(
        self, app_user_id: str, key: str, draft: EventDraft, *, etag: str | None = None
    ) -> Event:
        """See :meth:`calbridge.CalBridge.update_event`."""
        decision, provider, session, entry_cal, event_id = await self._resolve(
            app_user_id, key, around=draft.start.as_utc()
        )
        marked = attrs.evolve(draft, properties={**draft.properties, APP_KEY_PROPERTY: key})
        event = await provider.update_event(session, entry_cal, event_id, marked, etag=etag)
        await offload(self._wrote, app_user_id, key, "update", decision.account_id, entry_cal)
        return event

    async def delete(self, app_user_id: str, key: str) -> None:
        """See :meth:`calbridge.CalBridge.delete_event`."""
        if not await offload(self.store.ids.get_ids, key):
            return
        decision, provider, session, entry_cal, event_id = await self._resolve(app_user_id, key)
        await provider.delete_event(session, entry_cal, event_id)
        await offload(self._after_delete, app_user_id, key, decision.account_id, entry_cal)

    def _after_delete(self, app_user_id: str, key: str, account_id: str, calendar_id: str) -> None:
        self._wrote(app_user_id, key, "delete", account_id, calendar_id)
        self.store.audit_log.audit(
            "bridge",
            "event.deleted",
            app_user_id=app_user_id,
            account_id=account_id,
            detail={"key": key},
        )
        self.store.ids.delete_ids(key)

    def _wrote(
        self, app_user_id: str, key: str, action: Write, account_id: str, calendar_id: str
    ) -> None:
        for observer in self.observers:
            observer.wrote(app_user_id, key, action, account_id, calendar_id)

    async def _resolve(
        self, app_user_id: str, key: str, *, around: dt.datetime | None = None
    ) -> tuple[Decision, Provider, Session, str, str]:
        decision = await self.route(app_user_id)
        provider = self.runtime.provider(decision.provider)
        session = await self.runtime.asession(decision.account_id)
        entries = await offload(self.store.ids.get_ids, key)
        if not entries:
            raise NotFound(f"no event was created under key {key!r}", provider=decision.provider)
        mine = entries.get(decision.provider)
        if mine is not None:
            return decision, provider, session, mine.calendar_id, mine.event_id
        primary_cal = await self.calendars.resolve(decision, "primary")
        other = next(iter(entries.values()))
        try:
            cal = await self.calendars.resolve(decision, other.calendar_id)
        except NotFound:
            cal = primary_cal
        event_id, _ = await resolve_event_id(
            self.store,
            key=key,
            app_user_id=app_user_id,
            provider=provider,
            session=session,
            account_id=decision.account_id,
            calendar_id=cal,
            around=around,
        )
        if event_id is None:
            raise NotFound(
                f"event {key!r} is not (yet) visible through {decision.provider}",
                provider=decision.provider,
            )
        return decision, provider, session, cal, event_id


@functools.cache
def _converter() -> cattrs.Converter:
    return make_converter()


def _request_fingerprint(calendar_id: str, draft: EventDraft) -> str:
    """SHA-256 (hex) of a create request in canonical JSON (sorted keys, the converter's
    text for times): what an idempotency key is bound to."""
    body = {"calendar_id": calendar_id, "draft": _converter().unstructure(draft)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
