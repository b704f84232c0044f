"""The plugin author kit.

* :class:`ProviderContract` — the test class each provider plugin subclasses.
* :class:`ContractHarness` — what a subclass's ``contract_harness`` fixture yields.
* :class:`CalendarSeeder` — how a harness writes events for a provider that cannot write.
* :class:`MemoryProvider` / :class:`MemoryBackend` — the in-memory reference provider.
* :func:`fresh_plugin_host` — a plugin host with no entry points, strict, for isolation.
* :func:`memory_harness` — a ready harness over the reference provider.
* :func:`mock_client` — an ``httpx.AsyncClient`` answering through a handler, no network.

Fixtures (``plugin_host``, ``memory_backend``) come from the pytest plugin
``calbridge.testing.pytest_plugin``: add ``pytest_plugins = ["calbridge.testing.pytest_plugin"]``
to your ``conftest.py``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs
import httpx

from .._manager import PluginHost
from ..hookspecs import ProviderRegistrar, hookimpl
from ..models import Account, Channel
from ..provider import ProviderSettings, Session, StaticTokenSource, WebhookRequest
from ._harness import CalendarSeeder, ContractHarness
from ._memory import MemoryBackend, MemoryProvider, sign_memory_notification

if TYPE_CHECKING:
    from ._contract import ProviderContract

__all__ = [
    "CalendarSeeder",
    "ContractHarness",
    "MemoryBackend",
    "MemoryProvider",
    "ProviderContract",
    "fresh_plugin_host",
    "memory_harness",
    "memory_plugin",
    "mock_client",
    "sign_memory_notification",
]


def _make_memory_plugin() -> types.ModuleType:
    module = types.ModuleType("calbridge_memory")

    @hookimpl
    def register_providers(register: ProviderRegistrar) -> None:
        register(MemoryProvider, aliases=("mem",))

    module.register_providers = register_providers  # type: ignore[attr-defined]
    return module


def __getattr__(name: str) -> object:
    # ProviderContract is a pytest test class: import pytest only when it is asked for, so
    # the rest of the kit (harness, reference provider, plugin host) works without pytest
    if name == "ProviderContract":
        from ._contract import ProviderContract

        return ProviderContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: a plugin module registering the reference provider (not loaded by default)
memory_plugin = _make_memory_plugin()


def fresh_plugin_host(
    *plugins: object, builtins: Iterable[str] | None = None, entry_points: bool = False
) -> PluginHost:
    """A new, strict plugin host; ``plugins`` are registered on top of the built-ins."""
    kwargs = {} if builtins is None else {"builtins": tuple(builtins)}
    host = PluginHost(entry_points=entry_points, strict=True, **kwargs)
    host.load()
    for plugin in plugins:
        host.register(plugin, source="test")
    return host


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    """An ``AsyncClient`` whose requests go to ``handler`` (``httpx.MockTransport``)."""
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def memory_harness(
    backend: MemoryBackend | None = None, *, calendar_id: str = "work"
) -> ContractHarness:
    """A harness over the reference provider with one connected account."""
    backend = backend or MemoryBackend()
    backend.add_calendar(calendar_id, "Work", primary=True)
    provider = MemoryProvider(
        http=httpx.AsyncClient(), settings=ProviderSettings(options={"backend": backend})
    )
    grant = await provider.exchange_code(code="user:alice", redirect_uri="memory://cb")
    source = StaticTokenSource(tokens=grant.tokens, refresher=provider.refresh_tokens)
    session = Session(
        account=Account(app_user_id="alice", provider="memory", provider_account_id="alice"),
        tokens=source,
    )

    async def genuine(channel: Channel) -> WebhookRequest:
        return provider.notification_for(channel, seq=1)

    def forged(channel: Channel, genuine_req: WebhookRequest) -> list[WebhookRequest]:
        headers = dict(genuine_req.headers)
        headers["x-memory-signature"] = "AAAA" + headers["x-memory-signature"][4:]
        return [attrs.evolve(genuine_req, headers=headers)]

    return ContractHarness(
        provider=provider,
        session=session,
        calendar_id=calendar_id,
        genuine_notification=genuine,
        forged_notifications=forged,
    )
