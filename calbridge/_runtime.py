"""The bridge's runtime: store, vault, plugin host, shared HTTP client, providers, queue.

:class:`Runtime` is what every part of calbridge that acts on behalf of accounts (the
bridge facade, the sync engine, the webhook receiver, workers, the CLI) is built on. It
owns exactly one ``httpx.AsyncClient``, one store engine and one provider instance per
provider name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import httpx

from ._breaker import BreakerPolicy, share_circuit_breaker
from ._budget import DEFAULT_QUOTAS, RateBudget, RateQuota, install_rate_budget
from ._config import BridgeConfig
from ._http import make_http_client
from ._manager import PluginHost, get_plugin_host
from ._resilience import count_calls
from ._tally import Tally
from .errors import ConfigurationError, NotFound
from .models import Account
from .provider import Provider, ProviderSettings, Session
from .router import AccountFacts, Phase, Router, UserFacts

if TYPE_CHECKING:
    from .jobs import JobQueue
    from .store import Engine, RoutingState, Store

__all__ = ["Runtime"]


@attrs.define
class Runtime:
    """Shared machinery behind :class:`calbridge.CalBridge`.

    Build with :meth:`open`; close with :meth:`aclose`.
    """

    config: BridgeConfig
    host: PluginHost
    http: httpx.AsyncClient
    engine: Engine
    #: the state (imported lazily: no import-time cost); code handed the runtime reaches
    #: the database only through it (:class:`calbridge.store.StoreRuntime`)
    store: Store
    queue: JobQueue
    clock: Callable[[], float] = time.time
    router: Router = attrs.field(init=False)
    _providers: dict[str, Provider] = attrs.field(init=False, factory=dict)
    _owns_http: bool = True
    _oauth: Any = attrs.field(init=False, default=None)
    #: called ``(account, old_status, reason)`` when an account's status changes, before
    #: the ``account_status_changed`` hook (the bridge parks the account's jobs here)
    status_listeners: list[Callable[..., None]] = attrs.field(init=False, factory=list)
    #: what this process counts per provider (sync rounds, calls by outcome), written to
    #: the store for ``GET /metrics`` (:mod:`calbridge._tally`)
    tally: Tally = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.tally = Tally(self.engine)
        count_calls(self.http, self.tally.count_call)
        self.router = Router(
            load_facts=self.user_facts,
            target=self.config.target_provider,
            rules=self.config.routing.rules(),
            ttl=self.config.routing.ttl,
            on_change=self._audit_route_change,
        )

    @classmethod
    def open(
        cls,
        config: BridgeConfig | None = None,
        *,
        host: PluginHost | None = None,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Runtime:
        """Open the store (migrating an embedded SQLite file), load plugins, build the client."""
        from .jobs import JobQueue
        from .store import Store, create_engine
        from .store.vault import KeyRing, Vault

        config = config or BridgeConfig.from_env()
        loaded = (host or get_plugin_host()).load()
        config.check_providers(loaded.provider_names())  # before anything is opened
        engine = create_engine(config.database_url)
        vault = Vault(KeyRing.parse(config.keys.reveal())) if config.keys else None
        store = Store(engine, vault, clock=clock)
        owns = http is None
        # an injected clock (tests' fake time) also times the circuit breakers' cooldowns
        injected = clock is not time.time
        policy = BreakerPolicy(clock=clock) if injected else BreakerPolicy()
        client = http or make_http_client(transport=transport, breaker=policy)
        return cls(
            config=config,
            host=loaded,
            http=client,
            engine=engine,
            store=store,
            queue=JobQueue(engine, clock=clock),
            clock=clock,
            owns_http=owns,
        )

    async def aclose(self) -> None:
        """Close providers, the HTTP client (when owned) and the engine."""
        for provider in self._providers.values():
            await provider.aclose()
        if self._owns_http:
            await self.http.aclose()
        from .store import offload

        await offload(self.tally.close)
        self.engine.dispose()

    # -- providers and sessions ------------------------------------------------------

    def provider(self, name: str) -> Provider:
        """The provider instance for ``name`` (created once, sharing the HTTP client)."""
        found = self._providers.get(name)
        if found is None:
            cls = self.host.provider_class(name)
            settings = self._with_budget(cls.name, self.config.settings_for(cls.name))
            # one provider's outage opens its circuit for every process on the store
            share_circuit_breaker(
                self.http,
                self.engine,
                provider=cls.name,
                app=settings.client_id,
                clock=None if self.clock is time.time else self.clock,  # None: the store's
            )
            found = cls(http=self.http, settings=settings)
            self._providers[cls.name] = found
            self._providers[name] = found
        return found

    def _with_budget(self, provider: str, settings: ProviderSettings) -> ProviderSettings:
        """Install the provider's application-wide rate budget (shared through the store by
        every process) on the HTTP client; returns the settings the provider is built with.

        The option ``rate_budget``: True for the provider's documented quota
        (:data:`calbridge._budget.DEFAULT_QUOTAS`), a :class:`calbridge.RateQuota`, or
        False for none. It defaults to True unless per-process limiters are configured
        explicitly (``rate_limiters``, ``rate_limit_per_second`` / ``_per_minute``: the
        caller limits this provider itself). With the budget, Cronofy's per-process
        limiters are turned off unless configured explicitly (they would count token
        exchanges too).
        """
        local = ("rate_limiters", "rate_limit_per_second", "rate_limit_per_minute")
        explicit_local = any(key in settings.options for key in local)
        option = settings.option("rate_budget", not explicit_local)
        if option is False or option is None:
            return settings
        quota = option if isinstance(option, RateQuota) else DEFAULT_QUOTAS.get(provider)
        if quota is None:
            return settings
        budget = RateBudget(self.engine, provider=provider, app=settings.client_id, quota=quota)
        install_rate_budget(self.http, budget)
        if explicit_local:
            return settings
        return attrs.evolve(settings, options={**settings.options, "rate_limiters": ()})

    def account(self, account_id: str) -> Account:
        """A stored account, or NotFound."""
        account = self.store.accounts.get_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id!r} is not connected", provider="calbridge")
        return account

    async def aaccount(self, account_id: str) -> Account:
        """:meth:`account` for async code: the store read runs off the event loop."""
        from .store import offload

        return await offload(self.account, account_id)

    async def asession(self, account: Account | str) -> Session:
        """:meth:`session` for async code: an account id is looked up off the event loop."""
        if isinstance(account, str):
            account = await self.aaccount(account)
        return self._session_of(account)

    async def auser_facts(self, app_user_id: str) -> UserFacts:
        """:meth:`user_facts` for async code: the SQL statement runs off the event loop."""
        from .store import offload

        return await offload(self.user_facts, app_user_id)

    def session(self, account: Account | str) -> Session:
        """A session whose tokens come from the vault, refreshed single-flight.

        With an account id this reads the store: async code passes the :class:`Account`
        or awaits :meth:`asession`.
        """
        if isinstance(account, str):
            account = self.account(account)
        return self._session_of(account)

    def _session_of(self, account: Account) -> Session:
        from .auth import StoreTokenSource

        assert account.id is not None
        provider = self.provider(account.provider)
        source = StoreTokenSource(
            self.store,
            provider,
            account.id,
            notify=self.notify_status,
            clock=self.clock,
        )
        return Session(account=account, tokens=source)

    def notify_status(self, account: Account, old_status: Any, reason: str) -> None:
        """An account's status changed: run the listeners, then fire the hook once."""
        for listener in list(self.status_listeners):
            listener(account, old_status, reason)
        self.host.notify_account_status_changed(account, old_status, reason)

    def require_vault(self) -> None:
        """Fail closed when no vault keys are configured."""
        if not self.store.has_vault:
            raise ConfigurationError(
                "no token vault keys: set CALBRIDGE_KEYS (generate one with "
                "`calbridge keys generate`)"
            )

    @property
    def oauth(self) -> Any:
        """The OAuth flow (:class:`calbridge.auth.OAuthFlow`) for connecting accounts."""
        from .auth import OAuthFlow

        if self._oauth is None:
            self._oauth = OAuthFlow(
                self.store,
                self.provider,
                redirect_base=self.config.redirect_base,
                notify=self.notify_status,
                clock=self.clock,
            )
        return self._oauth

    # -- routing facts -----------------------------------------------------------------

    def user_facts(self, app_user_id: str) -> UserFacts:
        """Everything the router needs for one user, in one store read (one statement:
        :meth:`calbridge.store.RoutingRepository.user_facts`)."""
        facts = self.store.routing.user_facts(app_user_id)
        return UserFacts(
            app_user_id=app_user_id,
            accounts=tuple(
                AccountFacts(
                    account_id=a.account_id,
                    provider=a.provider,
                    status=a.status,
                    email=a.email,
                    created_at=a.created_at,
                )
                for a in facts.accounts
            ),
            phase=Phase(facts.phase) if facts.phase else None,
            pin=facts.data.get("pin"),
            tenant=facts.data.get("tenant"),
            legacy_provider=facts.data.get("legacy_provider"),
            last_provider=facts.data.get("last_provider"),
        )

    def _audit_route_change(self, decision: Any, previous: str | None) -> None:
        self.store.audit_log.audit(
            actor="router",
            action="route.changed",
            app_user_id=decision.app_user_id,
            account_id=decision.account_id,
            detail={
                "from": previous,
                "to": decision.provider,
                "source": decision.source,
                "steps": list(decision.steps),
            },
        )
        # the router already caches this decision: do not invalidate it
        self.update_routing(
            decision.app_user_id, data={"last_provider": decision.provider}, invalidate=False
        )

    def update_routing(
        self,
        app_user_id: str,
        *,
        phase: str | None = None,
        data: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        invalidate: bool = True,
    ) -> RoutingState:
        """Change a user's routing row (compare-and-set, retried); returns the new state.

        ``phase=None`` keeps the phase (``""`` means: not in a migration).
        """
        from .store import RoutingState, StaleWriteError

        for _ in range(20):
            current = self.store.routing.get_routing(app_user_id)
            merged = dict(current.data) if current is not None else {}
            merged.update(data or {})
            for key in drop:
                merged.pop(key, None)
            state = RoutingState(
                app_user_id=app_user_id,
                phase=phase if phase is not None else (current.phase if current else ""),
                primary_account_id=current.primary_account_id if current else None,
                secondary_account_id=current.secondary_account_id if current else None,
                data=merged,
            )
            try:
                stored = self.store.routing.set_routing(
                    state, expected_version=current.version if current else 0
                )
            except StaleWriteError:
                continue
            if invalidate:
                self.router.invalidate(app_user_id)
            return stored
        raise ConfigurationError(f"routing of {app_user_id!r} keeps changing; retry later")

    async def to_thread(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking store call off the event loop (:func:`calbridge.store.offload`)."""
        from .store import offload

        return await offload(fn, *args, **kwargs)
