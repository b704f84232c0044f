"""The one API applications call: :class:`CalBridge` (async) and :class:`SyncCalBridge`.

Every per-user call is routed (:mod:`calbridge.router`) to the provider that serves the
user now — the legacy one, or Cronofy once the user has moved — and the application never
names a provider::

    async with CalBridge(BridgeConfig.from_file("calbridge.toml")) as bridge:
        url = await bridge.connect_url("user-42", "google")        # send the user there
        account = await bridge.complete_connect("google", callback_query)
        async for event in bridge.events("user-42", "primary", window):
            ...
        await bridge.create_event("user-42", "primary", draft, key="booking-981")

Writes are keyed by the application's own idempotency key; the id map ties it to each
provider's event id, so the same key never makes two events, before or after migration.

The async API never waits on the database on the event loop: every store, queue and
routing read goes through :func:`calbridge.store.offload` (calbridge's database threads).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import cattrs
import httpx

from ._config import BridgeConfig
from ._forget import ForgetReport
from ._identity import APP_KEY_PROPERTY, resolve_event_id
from ._manager import PluginHost
from ._runtime import Runtime
from ._serialization import make_converter
from ._tracing import PROVIDER, annotate, traced
from .errors import (
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    NotSupported,
    ReauthRequired,
)
from .models import Account, Calendar, Event, EventDraft, FreeBusy, TimeRange
from .provider import Provider, Session
from .router import Decision, NoRouteError, Phase
from .store._offload import offload

__all__ = ["BridgeConfig", "CalBridge", "ForgetReport", "SyncCalBridge", "worker_handlers"]

ChangeCallback = Callable[[Any], Awaitable[None]]

#: seconds after a write before the written calendar is synced (providers such as Cronofy
#: apply writes asynchronously and never notify the app of its own writes)
WRITE_SETTLE_SECONDS = 30.0


class CalBridge:
    """One calendar API over every provider, routed per user.

    Args:
        config: configuration (defaults to :meth:`BridgeConfig.from_env`).
        host: a plugin host (defaults to the process-wide one).
        http: a shared ``httpx.AsyncClient`` to use instead of building one.
        transport: an httpx transport for the client calbridge builds (e.g. an ASGI
            transport onto a sandbox in tests).
    """

    def __init__(
        self,
        config: BridgeConfig | None = None,
        *,
        host: PluginHost | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = Runtime.open(config, host=host, http=http, transport=transport, clock=clock)
        self._calendars: dict[str, tuple[float, list[Calendar]]] = {}
        self._callbacks: list[ChangeCallback] = []
        self._changes: Any = None
        self._feed: Any = None

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> CalBridge:
        """A bridge configured from a TOML file (see :class:`BridgeConfig`)."""
        return cls(BridgeConfig.from_file(path), **kwargs)

    def __repr__(self) -> str:
        return f"<CalBridge store={self.runtime.engine.dialect.name}>"

    async def __aenter__(self) -> CalBridge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and the store."""
        await self.runtime.aclose()

    @property
    def config(self) -> BridgeConfig:
        """The configuration in use."""
        return self.runtime.config

    @property
    def store(self) -> Any:
        """The state store (:class:`calbridge.store.Store`)."""
        return self.runtime.store

    # -- routing -------------------------------------------------------------------------

    def route(self, app_user_id: str) -> Decision:
        """Which provider and account serve this user now (cached).

        Reads the store when the cache is cold: async code awaits :meth:`aroute`.
        """
        return self.runtime.router.route(app_user_id)

    async def aroute(self, app_user_id: str) -> Decision:
        """:meth:`route` without blocking the event loop (the store read is offloaded)."""
        decision = await self.runtime.router.aroute(app_user_id)
        annotate(**{PROVIDER: decision.provider, "calbridge.route.source": decision.source})
        return decision

    def explain_route(self, app_user_id: str) -> Decision:
        """A fresh routing decision with every step of its reasoning."""
        return self.runtime.router.explain(app_user_id)

    @traced("pin")
    async def pin(self, app_user_id: str, provider: str | None) -> None:
        """Pin a user to ``provider`` (None removes the pin). Audited.

        Raises:
            ProviderNotFoundError: no such provider is installed.
            NoRouteError: the user has no active ``provider`` account; nothing is
                changed (a pin to it would leave the user without a calendar).
        """
        if provider is not None:
            provider = self.runtime.host.provider_class(provider).name
            facts = await self.runtime.auser_facts(app_user_id)
            if not any(a.provider == provider and a.active for a in facts.accounts):
                raise NoRouteError(
                    f"{app_user_id!r} has no active {provider} account to pin to: connect "
                    "(or re-authorise) it first; nothing was changed"
                )
        await offload(self._pin, app_user_id, provider)

    def _pin(self, app_user_id: str, provider: str | None) -> None:
        if provider is None:
            self.runtime.update_routing(app_user_id, drop=("pin",))
        else:
            self.runtime.update_routing(app_user_id, data={"pin": provider})
        self.store.audit("cli", "route.pin", app_user_id=app_user_id, detail={"provider": provider})

    async def set_tenant(self, app_user_id: str, tenant: str | None) -> None:
        """Record the user's tenant (for tenant routing rules and cohorts)."""
        if tenant is None:
            await offload(self.runtime.update_routing, app_user_id, drop=("tenant",))
        else:
            await offload(self.runtime.update_routing, app_user_id, data={"tenant": tenant})

    # -- accounts ------------------------------------------------------------------------

    async def accounts(self, app_user_id: str | None = None) -> list[Account]:
        """Connected accounts (of one user, or all)."""
        found: list[Account] = await offload(self.store.list_accounts, app_user_id=app_user_id)
        return found

    async def account_status(self, app_user_id: str) -> dict[str, Any]:
        """The user's accounts, routing decision and migration phase, JSON-ready."""
        facts = await self.runtime.auser_facts(app_user_id)
        try:
            explained = await self.runtime.router.aexplain(app_user_id)
            decision: dict[str, Any] | None = explained.as_dict()
        except LookupError:
            decision = None
        return {
            "app_user_id": app_user_id,
            "phase": str(facts.phase) if facts.phase else None,
            "accounts": [
                {"id": a.account_id, "provider": a.provider, "status": a.status, "email": a.email}
                for a in facts.accounts
            ],
            "route": decision,
        }

    # -- connecting ----------------------------------------------------------------------

    async def connect_url(
        self,
        app_user_id: str,
        provider: str,
        *,
        scopes: Sequence[str] | None = None,
        login_hint: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """Where to send the user to connect ``provider`` (one-time state, PKCE)."""
        self.runtime.require_vault()
        start = await self.runtime.oauth.begin(
            app_user_id=app_user_id,
            provider=provider,
            scopes=scopes,
            login_hint=login_hint,
            extra=extra,
        )
        return str(start.url)

    @traced("complete_connect")
    async def complete_connect(self, provider: str, params: Mapping[str, str]) -> Account:
        """Handle the OAuth callback arriving on ``provider``'s redirect path.

        ``params`` is the callback's query (``code``, ``state``, and ``iss`` when sent).
        Missing, reused, expired or foreign state is refused before any token request.
        """
        annotate(**{PROVIDER: provider})
        account: Account = await self.runtime.oauth.complete(provider, params)
        self.runtime.router.invalidate(account.app_user_id)
        await self._on_connected(account)
        return account

    async def _on_connected(self, account: Account) -> None:
        """Start observing the new account's changes (first sync, push or polling)."""
        assert account.id is not None
        await self.changes.channels.on_account_connected(account.id)

    # -- calendars -----------------------------------------------------------------------

    async def _account_calendars(self, account_id: str, *, fresh: bool = False) -> list[Calendar]:
        hit = self._calendars.get(account_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        account = await self.runtime.aaccount(account_id)
        provider = self.runtime.provider(account.provider)
        calendars = await provider.list_calendars(self.runtime.session(account))
        self._calendars[account_id] = (now + 300.0, calendars)
        return calendars

    @traced("calendars")
    async def calendars(self, app_user_id: str) -> list[Calendar]:
        """The calendars of the provider serving this user."""
        decision = await self.aroute(app_user_id)
        return list(await self._account_calendars(decision.account_id, fresh=True))

    async def _calendar_for(self, decision: Decision, ref: str) -> str:
        """Translate an app calendar reference to the routed account's calendar id.

        ``"primary"`` is each provider's primary calendar; an id from another of the
        user's accounts maps to the routed account's calendar of the same name (or the
        primary one when the other was primary).
        """
        mine = await self._account_calendars(decision.account_id)
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
            theirs = await self._account_calendars(other.account_id)
            source = next((c for c in theirs if c.id == ref), None)
            if source is None:
                continue
            if source.primary:
                return await self._calendar_for(decision, "primary")
            same = next((c for c in mine if c.name == source.name), None)
            if same is not None:
                return same.id
        raise NotFound(
            f"calendar {ref!r} is not one of the user's calendars at {decision.provider}",
            provider=decision.provider,
        )

    # -- events --------------------------------------------------------------------------

    async def events(
        self,
        app_user_id: str,
        calendar_id: str,
        window: TimeRange,
        *,
        live: bool = False,
    ) -> AsyncIterator[Event]:
        """Events of a calendar overlapping ``window``.

        Served from the synced cache when the calendar has been synced (fast), else live
        from the provider, streamed page by page. In the ``shadow`` phase the same read
        is replayed against the target provider in the background and compared.
        """
        decision = await self.aroute(app_user_id)
        cal = await self._calendar_for(decision, calendar_id)
        cursor = None if live else await offload(self.store.get_cursor, decision.account_id, cal)
        if cursor is not None:
            cached: list[Event] = await offload(
                self.store.list_events, decision.account_id, cal, window
            )
            for event in cached:
                if window.overlaps(event.start.as_utc(), event.end.as_utc()) or event.recurrence:
                    yield event
        else:
            provider = self.runtime.provider(decision.provider)
            session = await self.runtime.asession(decision.account_id)
            async for page in provider.list_events(session, cal, window):
                for event in page:
                    yield event
        if (await self.runtime.auser_facts(app_user_id)).phase is Phase.SHADOW:
            await offload(self._enqueue_shadow_compare, app_user_id, window)

    def _enqueue_shadow_compare(self, app_user_id: str, window: TimeRange) -> None:
        from .migration._jobs import COMPARE_KIND

        self.runtime.queue.enqueue(
            COMPARE_KIND,
            {
                "app_user_id": app_user_id,
                "start": window.start.isoformat(),
                "end": window.end.isoformat(),
            },
            coalesce_key=f"compare:{app_user_id}",
        )

    @traced("list_events")
    async def list_events(
        self, app_user_id: str, calendar_id: str, window: TimeRange, *, live: bool = False
    ) -> list[Event]:
        """:meth:`events` collected into a list."""
        return [e async for e in self.events(app_user_id, calendar_id, window, live=live)]

    @traced("create_event")
    async def create_event(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, *, key: str
    ) -> Event:
        """Create an event keyed by the app's idempotency ``key``.

        The same key never makes two events: not on retry, not when two processes send
        the first create at once, and not after the user moved to another provider (the
        existing copy is found by iCalendar UID). A retry with the same draft returns the
        first event; the same key with a different draft or calendar raises
        :class:`~calbridge.errors.IdempotencyConflict` before any provider call. The key
        is bound to its first request before the provider is called (the store keeps a
        SHA-256 of the request, never the draft); when the provider refuses the request
        outright (:class:`~calbridge.errors.InvalidRequest`, ``NotFound``,
        ``ReauthRequired``, ``NotSupported``) or calbridge fails before calling it, the
        key is released so a corrected draft may use it. After a timeout or 5xx the
        event may exist: the key stays bound to that draft.
        """
        from .store import IdMapEntry

        fingerprint = _request_fingerprint(calendar_id, draft)
        claimed = await offload(self.store.claim_key, key, fingerprint, app_user_id=app_user_id)
        if not claimed:
            raise IdempotencyConflict(key)
        try:
            target = await self._create_target(app_user_id, calendar_id, draft, key)
        except Exception:  # nothing reached the provider
            await offload(self.store.release_key, key, fingerprint)
            raise
        if isinstance(target, Event):
            return target  # made earlier under this key
        decision, provider, session, cal = target
        marked = attrs.evolve(draft, properties={**draft.properties, APP_KEY_PROPERTY: key})
        try:
            event = await provider.create_event(session, cal, marked, idempotency_key=key)
        except (InvalidRequest, NotFound, NotSupported, ReauthRequired):
            await offload(self.store.release_key, key, fingerprint)  # refused: nothing made
            raise
        await offload(
            self.store.put_id,
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
        await offload(self._after_write, app_user_id, key, "create", decision.account_id, cal)
        return event

    async def _create_target(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, key: str
    ) -> Event | tuple[Decision, Provider, Session, str]:
        """Where a create under ``key`` goes (route, provider, session, calendar), or the
        event an earlier create under it made."""
        decision = await self.aroute(app_user_id)
        provider = self.runtime.provider(decision.provider)
        session = await self.runtime.asession(decision.account_id)
        cal = await self._calendar_for(decision, calendar_id)
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
            cached = await offload(self.store.get_event, decision.account_id, cal, existing)
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

    @traced("update_event")
    async def update_event(
        self, app_user_id: str, key: str, draft: EventDraft, *, etag: str | None = None
    ) -> Event:
        """Update the event created under ``key`` (wherever the user is served now)."""
        decision, provider, session, entry_cal, event_id = await self._resolve(
            app_user_id, key, around=draft.start.as_utc()
        )
        marked = attrs.evolve(draft, properties={**draft.properties, APP_KEY_PROPERTY: key})
        event = await provider.update_event(session, entry_cal, event_id, marked, etag=etag)
        await offload(self._after_write, app_user_id, key, "update", decision.account_id, entry_cal)
        return event

    @traced("delete_event")
    async def delete_event(self, app_user_id: str, key: str) -> None:
        """Delete the event created under ``key``; deleting twice succeeds."""
        if not await offload(self.store.get_ids, key):
            return
        decision, provider, session, entry_cal, event_id = await self._resolve(app_user_id, key)
        await provider.delete_event(session, entry_cal, event_id)
        await offload(self._after_delete, app_user_id, key, decision.account_id, entry_cal)

    def _after_delete(self, app_user_id: str, key: str, account_id: str, calendar_id: str) -> None:
        self._after_write(app_user_id, key, "delete", account_id, calendar_id)
        self.store.audit(
            "bridge",
            "event.deleted",
            app_user_id=app_user_id,
            account_id=account_id,
            detail={"key": key},
        )
        self.store.delete_ids(key)

    async def _resolve(
        self, app_user_id: str, key: str, *, around: dt.datetime | None = None
    ) -> tuple[Decision, Provider, Session, str, str]:
        decision = await self.aroute(app_user_id)
        provider = self.runtime.provider(decision.provider)
        session = await self.runtime.asession(decision.account_id)
        entries = await offload(self.store.get_ids, key)
        if not entries:
            raise NotFound(f"no event was created under key {key!r}", provider=decision.provider)
        mine = entries.get(decision.provider)
        if mine is not None:
            return decision, provider, session, mine.calendar_id, mine.event_id
        primary_cal = await self._calendar_for(decision, "primary")
        other = next(iter(entries.values()))
        try:
            cal = await self._calendar_for(decision, other.calendar_id)
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

    def _after_write(
        self, app_user_id: str, key: str, action: str, account_id: str, calendar_id: str
    ) -> None:
        """Bring the cache up to date and, in ``dual``, verify the write at the target.

        Providers do not always notify an app of its own writes (Cronofy never does), so
        the written calendar gets a (coalesced) sync shortly after.
        """
        from .migration._jobs import VERIFY_ATTEMPTS, VERIFY_KIND
        from .sync import calendar_key

        self.runtime.queue.enqueue(
            "sync",
            {"account": account_id, "calendar": calendar_id},
            coalesce_key=calendar_key(account_id, calendar_id),
            run_at=self.runtime.clock() + WRITE_SETTLE_SECONDS,
        )
        if self.runtime.user_facts(app_user_id).phase is Phase.DUAL:
            self.runtime.queue.enqueue(
                VERIFY_KIND,
                {"app_user_id": app_user_id, "key": key, "action": action},
                run_at=self.runtime.clock() + 60,
                max_attempts=VERIFY_ATTEMPTS,
            )

    @traced("free_busy")
    async def free_busy(
        self, app_user_id: str, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """Busy blocks of the user's calendars at the provider serving them."""
        decision = await self.aroute(app_user_id)
        provider = self.runtime.provider(decision.provider)
        cals = [await self._calendar_for(decision, c) for c in calendar_ids]
        session = await self.runtime.asession(decision.account_id)
        return await provider.free_busy(session, cals, window)

    # -- changes -------------------------------------------------------------------------

    @property
    def changes(self) -> Any:
        """The change pipeline (:class:`calbridge.sync.SyncService`), built on first use."""
        if self._changes is None:
            from ._feed import AppFeed
            from .migration._jobs import register_migration_handlers
            from .sync import SyncService

            service = SyncService(self.runtime)
            service.on_changes(self._deliver)
            self.runtime.status_listeners.append(self._park_if_unserviceable)
            register_migration_handlers(service.handlers, self.runtime)
            self._feed = AppFeed(self.runtime)
            self._changes = service
        return self._changes

    def _park_if_unserviceable(self, account: Account, old_status: Any, reason: str) -> None:
        """An account that needs re-authorization (or was revoked) gets its jobs parked."""
        from .models import AccountStatus

        if account.status is AccountStatus.ACTIVE or account.id is None:
            return
        removed = self.changes.channels.park_account(account.id)
        self.runtime.router.invalidate(account.app_user_id)
        self.store.audit(
            "bridge",
            "account.parked",
            app_user_id=account.app_user_id,
            account_id=account.id,
            detail={"status": str(account.status), "reason": reason, "jobs_removed": removed},
        )

    def on_changes(self, callback: ChangeCallback) -> ChangeCallback:
        """Register an async callback receiving change batches (also a decorator).

        Each batch is a :class:`calbridge.sync.ChangeBatch`: one calendar's upserted
        events and deleted ids, with a stable ``id`` for deduplication. Each distinct
        change is delivered once per user, even while two providers (legacy and Cronofy)
        report the same native calendar during a migration; an unchanged event re-read by
        a full resync is not delivered again.
        """
        _ = self.changes
        self._callbacks.append(callback)
        return callback

    async def _deliver(self, batch: Any) -> None:
        if not self._callbacks:
            return
        feed = self._feed
        assert feed is not None
        if batch.app_user_id is None:
            for callback in self._callbacks:
                await callback(batch)
            return
        filtered, records = await offload(feed.select, batch)
        if len(filtered) or filtered.full:
            for callback in self._callbacks:
                await callback(filtered)
        await offload(feed.record, batch, records)

    @traced("subscribe")
    async def subscribe(self, app_user_id: str) -> dict[str, str]:
        """Start observing every account of the user (push channel or polling).

        Returns account id -> ``"push"`` or ``"poll"``. Connecting does this already.
        """
        out = {}
        for account in await self.accounts(app_user_id):
            assert account.id is not None
            out[account.id] = await self.changes.channels.on_account_connected(account.id)
        return out

    def webhook_app(self) -> Any:
        """The ASGI webhook receiver to mount in the application (one route per provider)."""
        from .webhooks import make_webhook_app

        return make_webhook_app(self.runtime)

    def worker(self, **options: Any) -> Any:
        """A job worker running the change pipeline and migration jobs
        (:class:`calbridge.jobs.Worker`; ``await worker.run()`` until stopped)."""
        from .jobs import Worker

        return Worker(self.runtime.queue, self.changes.handlers, **options)

    # -- forgetting ----------------------------------------------------------------------

    @traced("forget_user")
    async def forget_user(self, app_user_id: str) -> ForgetReport:
        """GDPR erasure: revoke tokens, stop channels, purge cache, id map and tokens.

        An audit line (without personal data beyond the app's user id) is kept.
        """
        from ._forget import forget_user

        return await forget_user(self, app_user_id)


@functools.cache
def _converter() -> cattrs.Converter:
    return make_converter()


def _request_fingerprint(calendar_id: str, draft: EventDraft) -> str:
    """SHA-256 (hex) of a create request in canonical JSON (sorted keys, the converter's
    text for times): what an idempotency key is bound to."""
    body = {"calendar_id": calendar_id, "draft": _converter().unstructure(draft)}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def worker_handlers(queue: Any) -> Any:
    """Job handlers of a bridge on ``queue``'s database, for ``calbridge worker``.

    ``calbridge worker --handlers calbridge.bridge:worker_handlers`` runs the change
    pipeline (syncs, reconciliation, polling, channel renewal, deliveries) and the
    migration jobs. The configuration comes from ``$CALBRIDGE_CONFIG`` (a TOML file) or
    the environment; the database is the worker's own.
    """
    import os

    from .store import engine_url

    path = os.environ.get("CALBRIDGE_CONFIG")
    config = BridgeConfig.from_file(path) if path else BridgeConfig.from_env()
    url = engine_url(queue.engine, with_password=True)  # str(engine.url) hides it as ***
    bridge = CalBridge(attrs.evolve(config, database_url=url))
    return bridge.changes.handlers


from ._blocking import SyncCalBridge  # noqa: E402 - re-exported; it wraps CalBridge
