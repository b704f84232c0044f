"""The blocking face of the bridge: :class:`SyncCalBridge`, for Django, Flask and scripts."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._config import BridgeConfig
from .models import Account, Calendar, Event, EventDraft, FreeBusy, TimeRange
from .router import Decision

if TYPE_CHECKING:
    from .bridge import CalBridge, ForgetReport
    from .jobs import Worker
    from .provider import TokenGrant
    from .store import Store

__all__ = ["SyncCalBridge"]

T = TypeVar("T")

#: a change callback of the blocking bridge: a plain function (run in a thread) or an
#: ``async def`` (run on the bridge's loop)
SyncChangeCallback = Callable[[Any], Any]


class SyncCalBridge:
    """The same API as :class:`~calbridge.CalBridge`, blocking, for Django / Flask / scripts.

    It runs a private event loop in a background thread; every coroutine method of
    :class:`~calbridge.CalBridge` is a method here that blocks until the call finishes,
    and every plain method and property is passed through::

        bridge = SyncCalBridge(BridgeConfig.from_env())
        bridge.create_event("user-42", "primary", draft, key="booking-981")
        for event in bridge.events("user-42", "primary", window):
            ...

    Differences, all deliberate:

    * :meth:`close` (and ``with SyncCalBridge(...) as bridge:``) replaces
      :meth:`CalBridge.aclose <calbridge.CalBridge.aclose>`;
    * there is no ``aroute``: :meth:`route` is the blocking form of both
      :meth:`CalBridge.route <calbridge.CalBridge.route>` and
      :meth:`CalBridge.aroute <calbridge.CalBridge.aroute>`;
    * :meth:`events` is a plain iterator (the async one is driven on the bridge's loop);
    * :meth:`on_changes` also takes a plain function (called in a worker thread);
    * :meth:`worker` returns the async :class:`calbridge.jobs.Worker`: run it with
      :meth:`run` (``bridge.run(worker.run_until_idle())``);
    * :meth:`run` runs any awaitable on the bridge's loop (the escape hatch).

    Args:
        config: as for :class:`~calbridge.CalBridge`.
        **kwargs: passed to :class:`~calbridge.CalBridge` (``host``, ``http``,
            ``transport``, ``clock``).
    """

    def __init__(self, config: BridgeConfig | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="calbridge-sync"
        )
        self._thread.start()
        self._bridge: CalBridge = self._call(self._make(config, kwargs))

    @classmethod
    def from_file(cls, path: str, **kwargs: Any) -> SyncCalBridge:
        """A blocking bridge configured from a TOML file (see
        :meth:`CalBridge.from_file <calbridge.CalBridge.from_file>`)."""
        return cls(BridgeConfig.from_file(path), **kwargs)

    @staticmethod
    async def _make(config: BridgeConfig | None, kwargs: Mapping[str, Any]) -> CalBridge:
        from .bridge import CalBridge

        return CalBridge(config, **kwargs)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Call a plain function on the bridge's loop thread (for objects bound to it)."""

        async def call() -> T:
            return fn()

        return self._call(call())

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the bridge's event loop and return its result (blocking).

        For the async objects the bridge hands out, e.g. ``bridge.run(worker.run())``.
        """

        async def wait() -> T:
            return await awaitable

        return self._call(wait())

    def __repr__(self) -> str:
        return f"<SyncCalBridge {self._bridge!r}>"

    @property
    def async_bridge(self) -> CalBridge:
        """The underlying async bridge (its coroutines must run on this bridge's loop:
        :meth:`run`)."""
        return self._bridge

    @property
    def config(self) -> BridgeConfig:
        """The configuration in use."""
        return self._bridge.config

    @property
    def store(self) -> Store:
        """The state store."""
        return self._bridge.store

    @property
    def changes(self) -> Any:
        """The change pipeline (:class:`calbridge.sync.SyncService`), built on first use."""
        return self._on_loop(lambda: self._bridge.changes)

    def close(self) -> None:
        """Close the bridge and stop the loop."""
        self._call(self._bridge.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncCalBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- routing -------------------------------------------------------------------------

    def route(self, app_user_id: str) -> Decision:
        """See :meth:`CalBridge.route <calbridge.CalBridge.route>`."""
        return self._bridge.route(app_user_id)

    def explain_route(self, app_user_id: str) -> Decision:
        """See :meth:`CalBridge.explain_route <calbridge.CalBridge.explain_route>`."""
        return self._bridge.explain_route(app_user_id)

    def pin(self, app_user_id: str, provider: str | None) -> None:
        """See :meth:`CalBridge.pin <calbridge.CalBridge.pin>`."""
        self._call(self._bridge.pin(app_user_id, provider))

    def set_tenant(self, app_user_id: str, tenant: str | None) -> None:
        """See :meth:`CalBridge.set_tenant <calbridge.CalBridge.set_tenant>`."""
        self._call(self._bridge.set_tenant(app_user_id, tenant))

    # -- accounts and connecting ---------------------------------------------------------

    def accounts(self, app_user_id: str | None = None) -> list[Account]:
        """See :meth:`CalBridge.accounts <calbridge.CalBridge.accounts>`."""
        return self._call(self._bridge.accounts(app_user_id))

    def account_status(self, app_user_id: str) -> dict[str, Any]:
        """See :meth:`CalBridge.account_status <calbridge.CalBridge.account_status>`."""
        return self._call(self._bridge.account_status(app_user_id))

    def connect_url(
        self,
        app_user_id: str,
        provider: str,
        *,
        scopes: Sequence[str] | None = None,
        login_hint: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """See :meth:`CalBridge.connect_url <calbridge.CalBridge.connect_url>`."""
        return self._call(
            self._bridge.connect_url(
                app_user_id, provider, scopes=scopes, login_hint=login_hint, extra=extra
            )
        )

    def complete_connect(self, provider: str, params: Mapping[str, str]) -> Account:
        """See :meth:`CalBridge.complete_connect <calbridge.CalBridge.complete_connect>`."""
        return self._call(self._bridge.complete_connect(provider, params))

    def connect_with_grant(
        self, app_user_id: str, provider: str, grant: TokenGrant, *, method: str
    ) -> Account:
        """See :meth:`CalBridge.connect_with_grant <calbridge.CalBridge.connect_with_grant>`."""
        return self._call(
            self._bridge.connect_with_grant(app_user_id, provider, grant, method=method)
        )

    # -- calendars and events ------------------------------------------------------------

    def calendars(self, app_user_id: str) -> list[Calendar]:
        """See :meth:`CalBridge.calendars <calbridge.CalBridge.calendars>`."""
        return self._call(self._bridge.calendars(app_user_id))

    def events(
        self, app_user_id: str, calendar_id: str, window: TimeRange, *, live: bool = False
    ) -> Iterator[Event]:
        """See :meth:`CalBridge.events <calbridge.CalBridge.events>`: the same stream, as a
        plain iterator (pages are read on the bridge's loop as the iteration needs them)."""
        stream = cast(
            AsyncGenerator[Event, None],
            self._bridge.events(app_user_id, calendar_id, window, live=live),
        )
        done = object()

        async def step() -> object:
            return await anext(stream, done)

        try:
            while (item := self._call(step())) is not done:
                yield cast(Event, item)
        finally:
            self._call(stream.aclose())

    def list_events(
        self, app_user_id: str, calendar_id: str, window: TimeRange, *, live: bool = False
    ) -> list[Event]:
        """See :meth:`CalBridge.list_events <calbridge.CalBridge.list_events>`."""
        return self._call(self._bridge.list_events(app_user_id, calendar_id, window, live=live))

    def create_event(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, *, key: str
    ) -> Event:
        """See :meth:`CalBridge.create_event <calbridge.CalBridge.create_event>`."""
        return self._call(self._bridge.create_event(app_user_id, calendar_id, draft, key=key))

    def update_event(
        self, app_user_id: str, key: str, draft: EventDraft, *, etag: str | None = None
    ) -> Event:
        """See :meth:`CalBridge.update_event <calbridge.CalBridge.update_event>`."""
        return self._call(self._bridge.update_event(app_user_id, key, draft, etag=etag))

    def delete_event(self, app_user_id: str, key: str) -> None:
        """See :meth:`CalBridge.delete_event <calbridge.CalBridge.delete_event>`."""
        self._call(self._bridge.delete_event(app_user_id, key))

    def free_busy(
        self, app_user_id: str, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """See :meth:`CalBridge.free_busy <calbridge.CalBridge.free_busy>`."""
        return self._call(self._bridge.free_busy(app_user_id, calendar_ids, window))

    # -- changes -------------------------------------------------------------------------

    def on_changes(self, callback: SyncChangeCallback) -> SyncChangeCallback:
        """See :meth:`CalBridge.on_changes <calbridge.CalBridge.on_changes>` (also a
        decorator). An ``async def`` callback runs on the bridge's loop; a plain function
        runs in a worker thread (it may block), and the batch is acknowledged when it
        returns."""
        if inspect.iscoroutinefunction(callback):
            target = callback
        else:

            async def target(batch: Any) -> None:
                await asyncio.to_thread(callback, batch)

        self._on_loop(lambda: self._bridge.on_changes(target))
        return callback

    def subscribe(self, app_user_id: str) -> dict[str, str]:
        """See :meth:`CalBridge.subscribe <calbridge.CalBridge.subscribe>`."""
        return self._call(self._bridge.subscribe(app_user_id))

    def webhook_app(self) -> Any:
        """See :meth:`CalBridge.webhook_app <calbridge.CalBridge.webhook_app>`: an ASGI
        app, served by the application's ASGI server (it verifies, stores and queues; the
        jobs it queues are run by workers)."""
        return self._on_loop(self._bridge.webhook_app)

    def worker(self, **options: Any) -> Worker:
        """See :meth:`CalBridge.worker <calbridge.CalBridge.worker>`. The worker is async
        and runs on this bridge's loop: ``bridge.run(worker.run_until_idle())`` runs the
        queued jobs and returns; ``bridge.run(worker.run())`` runs until the worker is
        stopped."""
        made: Worker = self._on_loop(lambda: self._bridge.worker(**options))
        return made

    # -- forgetting ----------------------------------------------------------------------

    def forget_user(self, app_user_id: str) -> ForgetReport:
        """See :meth:`CalBridge.forget_user <calbridge.CalBridge.forget_user>`."""
        return self._call(self._bridge.forget_user(app_user_id))
