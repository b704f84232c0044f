"""The blocking face of the bridge: :class:`SyncCalBridge`, for Django, Flask and scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._config import BridgeConfig
from .models import Account, Calendar, Event, EventDraft, FreeBusy, TimeRange
from .router import Decision

if TYPE_CHECKING:
    from .bridge import CalBridge, ForgetReport

__all__ = ["SyncCalBridge"]


class SyncCalBridge:
    """The same API as :class:`CalBridge`, blocking, for Django / Flask / scripts.

    It runs a private event loop in a background thread; every method blocks until the
    async call finishes::

        bridge = SyncCalBridge(BridgeConfig.from_env())
        bridge.create_event("user-42", "primary", draft, key="booking-981")
    """

    def __init__(self, config: BridgeConfig | None = None, **kwargs: Any) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="calbridge-sync"
        )
        self._thread.start()
        self._bridge: CalBridge = self._call(self._make(config, kwargs))

    @staticmethod
    async def _make(config: BridgeConfig | None, kwargs: Mapping[str, Any]) -> Any:
        from .bridge import CalBridge

        return CalBridge(config, **kwargs)

    def _call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    @property
    def async_bridge(self) -> CalBridge:
        """The underlying async bridge."""
        return self._bridge

    def close(self) -> None:
        """Close the bridge and stop the loop."""
        self._call(self._bridge.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncCalBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def route(self, app_user_id: str) -> Decision:
        """See :meth:`CalBridge.route`."""
        return self._bridge.route(app_user_id)

    def connect_url(self, app_user_id: str, provider: str, **options: Any) -> str:
        """See :meth:`CalBridge.connect_url`."""
        return self._call(  # type: ignore[no-any-return]
            self._bridge.connect_url(app_user_id, provider, **options)
        )

    def complete_connect(self, provider: str, params: Mapping[str, str]) -> Account:
        """See :meth:`CalBridge.complete_connect`."""
        return self._call(self._bridge.complete_connect(provider, params))  # type: ignore[no-any-return]

    def accounts(self, app_user_id: str | None = None) -> list[Account]:
        """See :meth:`CalBridge.accounts`."""
        return self._call(self._bridge.accounts(app_user_id))  # type: ignore[no-any-return]

    def calendars(self, app_user_id: str) -> list[Calendar]:
        """See :meth:`CalBridge.calendars`."""
        return self._call(self._bridge.calendars(app_user_id))  # type: ignore[no-any-return]

    def list_events(
        self, app_user_id: str, calendar_id: str, window: TimeRange, *, live: bool = False
    ) -> list[Event]:
        """See :meth:`CalBridge.list_events`."""
        return self._call(  # type: ignore[no-any-return]
            self._bridge.list_events(app_user_id, calendar_id, window, live=live)
        )

    def create_event(
        self, app_user_id: str, calendar_id: str, draft: EventDraft, *, key: str
    ) -> Event:
        """See :meth:`CalBridge.create_event`."""
        return self._call(  # type: ignore[no-any-return]
            self._bridge.create_event(app_user_id, calendar_id, draft, key=key)
        )

    def update_event(
        self, app_user_id: str, key: str, draft: EventDraft, *, etag: str | None = None
    ) -> Event:
        """See :meth:`CalBridge.update_event`."""
        return self._call(  # type: ignore[no-any-return]
            self._bridge.update_event(app_user_id, key, draft, etag=etag)
        )

    def delete_event(self, app_user_id: str, key: str) -> None:
        """See :meth:`CalBridge.delete_event`."""
        self._call(self._bridge.delete_event(app_user_id, key))

    def free_busy(
        self, app_user_id: str, calendar_ids: Sequence[str], window: TimeRange
    ) -> list[FreeBusy]:
        """See :meth:`CalBridge.free_busy`."""
        return self._call(  # type: ignore[no-any-return]
            self._bridge.free_busy(app_user_id, calendar_ids, window)
        )

    def forget_user(self, app_user_id: str) -> ForgetReport:
        """See :meth:`CalBridge.forget_user`."""
        return self._call(self._bridge.forget_user(app_user_id))  # type: ignore[no-any-return]
