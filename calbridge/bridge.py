"""The one API applications call: :class:`CalBridge` (async; ``calbridge.SyncCalBridge``
wraps it for blocking code).

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

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from ._activity import ActivityObserver, WrittenCalendarSync
from ._calendars import CalendarResolver
from ._config import BridgeConfig
from ._forget import ForgetReport
from ._manager import PluginHost
from ._runtime import Runtime
from ._tracing import PROVIDER, annotate, traced
from ._writes import EventWriter
from .migration import MigrationActivity, register_migration_handlers
from .models import Account, Calendar, Event, EventDraft, FreeBusy, TimeRange
from .router import Decision, NoRouteError
from .store._offload import offload

if TYPE_CHECKING:
    from .provider import TokenGrant
    from .store import Store

__all__ = ["BridgeConfig", "CalBridge", "ForgetReport", "worker_handlers"]

ChangeCallback = Callable[[Any], Awaitable[None]]


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
        self._calendars = CalendarResolver(self.runtime)
        #: told of every read and write served (on a store thread): the written calendar's
        #: next sync, the migration's shadow compares and dual verifications
        self.observers: list[ActivityObserver] = [
            WrittenCalendarSync(self.runtime),
            MigrationActivity(self.runtime),
        ]
        self._writer = EventWriter(self.runtime, self._calendars, self.aroute, self.observers)
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
    def store(self) -> Store:
        """The state store."""
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
        self.store.audit_log.audit(
            "cli", "route.pin", app_user_id=app_user_id, detail={"provider": provider}
        )

    async def set_tenant(self, app_user_id: str, tenant: str | None) -> None:
        """Record the user's tenant (for tenant routing rules and cohorts)."""
        if tenant is None:
            await offload(self.runtime.update_routing, app_user_id, drop=("tenant",))
        else:
            await offload(self.runtime.update_routing, app_user_id, data={"tenant": tenant})

    # -- accounts ------------------------------------------------------------------------

    async def accounts(self, app_user_id: str | None = None) -> list[Account]:
        """Connected accounts (of one user, or all)."""
        return await offload(self.store.accounts.list_accounts, app_user_id=app_user_id)

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

    async def connect_with_grant(
        self, app_user_id: str, provider: str, grant: TokenGrant, *, method: str
    ) -> Account:
        """Connect an account whose credentials came another way than an OAuth redirect
        (CalDAV's user name and app password, a service account ...), exactly as a
        completed :meth:`complete_connect` does: the account stored (re-activated if it
        was disconnected), ``grant.tokens`` sealed in the vault, an ``auth``/``connected``
        audit entry naming ``method`` (e.g. ``"basic"``), the user's route recomputed and
        the account observed at once (push channel or polling).

        The caller checks the credentials with the provider first; a provider plugin
        wraps this in its own connect function (``calbridge_caldav.connect``).

        Raises:
            ConfigurationError: the store has no vault keys.
            ProviderNotFoundError: no installed provider is named ``provider``.
        """
        annotate(**{PROVIDER: provider})
        self.runtime.require_vault()
        self.runtime.provider(provider)  # an installed provider, or ProviderNotFoundError
        account, old = await offload(
            self.store.save_grant, app_user_id, provider, grant, method=method
        )
        if old is not None:
            self.runtime.notify_status(account, old, "reconnected")
        self.runtime.router.invalidate(app_user_id)
        await self._on_connected(account)
        return account

    async def _on_connected(self, account: Account) -> None:
        """Start observing the new account's changes (first sync, push or polling)."""
        assert account.id is not None
        await self.changes.channels.on_account_connected(account.id)

    # -- calendars -----------------------------------------------------------------------

    @traced("calendars")
    async def calendars(self, app_user_id: str) -> list[Calendar]:
        """The calendars of the provider serving this user."""
        decision = await self.aroute(app_user_id)
        return list(await self._calendars.of_account(decision.account_id, fresh=True))

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
        cal = await self._calendars.resolve(decision, calendar_id)
        cursor = (
            None if live else await offload(self.store.events.get_cursor, decision.account_id, cal)
        )
        if cursor is not None:
            cached = await offload(self.store.events.list_events, decision.account_id, cal, window)
            for event in cached:
                if window.overlaps(event.start.as_utc(), event.end.as_utc()) or event.recurrence:
                    yield event
        else:
            provider = self.runtime.provider(decision.provider)
            session = await self.runtime.asession(decision.account_id)
            async for page in provider.list_events(session, cal, window):
                for event in page:
                    yield event
        await offload(self._read, app_user_id, window)

    def _read(self, app_user_id: str, window: TimeRange) -> None:
        for observer in self.observers:
            observer.read(app_user_id, window)

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
        return await self._writer.create(app_user_id, calendar_id, draft, key=key)

    @traced("update_event")
    async def update_event(
        self, app_user_id: str, key: str, draft: EventDraft, *, etag: str | None = None
    ) -> Event:
        """Update the event created under ``key`` (wherever the user is served now)."""
        return await self._writer.update(app_user_id, key, draft, etag=etag)

    @traced("delete_event")
    async def delete_event(self, app_user_id: str, key: str) -> None:
        """Delete the event created under ``key``; deleting twice succeeds."""
        await self._writer.delete(app_user_id, key)

    @traced("free_busy")
    async def free_busy(
        self, app_user_id: str, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """Busy blocks of the user's calendars at the provider serving them."""
        decision = await self.aroute(app_user_id)
        provider = self.runtime.provider(decision.provider)
        cals = [await self._calendars.resolve(decision, c) for c in calendar_ids]
        session = await self.runtime.asession(decision.account_id)
        return await provider.free_busy(session, cals, window)

    # -- changes -------------------------------------------------------------------------

    @property
    def changes(self) -> Any:
        """The change pipeline (:class:`calbridge.sync.SyncService`), built on first use."""
        if self._changes is None:
            from ._feed import AppFeed
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
        self.store.audit_log.audit(
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
