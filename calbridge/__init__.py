"""calbridge: one calendar API over many providers, routed per user.

The public surface is what this module exports, plus :mod:`calbridge.errors`,
:mod:`calbridge.hookspecs`, :mod:`calbridge.testing`, :mod:`calbridge.toolkit` (what
provider plugins are built with) and :mod:`calbridge.sandbox`. Everything in an
underscore module is private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from ._breaker import BreakerPolicy, CircuitBreaker, circuit_breaker
from ._budget import (
    RateBudget,
    RateQuota,
    RateWindow,
    background_calls,
    install_rate_budget,
    rate_budget,
)
from ._http import (
    ProviderCall,
    RateLimiter,
    RetryPolicy,
    make_http_client,
    parse_retry_after,
    read_json,
    redact_url,
    send,
    signal_when_sent,
)
from ._manager import DEFAULT_PLUGINS, PluginHost, ProviderInfo, get_plugin_host
from ._paging import prefetched_pages
from ._payload import RawPayload
from ._serialization import make_converter
from .hookspecs import ChangeSource, ProviderRegistrar, hookimpl
from .models import (
    Account,
    AccountStatus,
    Attendee,
    Calendar,
    Change,
    ChangeKind,
    ChangePage,
    Channel,
    Event,
    EventDraft,
    EventStatus,
    EventTime,
    FreeBusy,
    FreeBusyStatus,
    Person,
    ResponseStatus,
    Secret,
    SeriesRole,
    TimeKind,
    TimeRange,
    TokenSet,
    Transparency,
    Visibility,
)
from .provider import (
    AuthorizationRequest,
    Capabilities,
    ChannelLookup,
    ChannelRequest,
    Notification,
    NotificationKind,
    Provider,
    ProviderSettings,
    Session,
    StaticTokenSource,
    TokenGrant,
    TokenSource,
    WebhookReply,
    WebhookRequest,
)

if TYPE_CHECKING:
    from ._blocking import SyncCalBridge
    from ._config import BridgeConfig, RoutingConfig
    from .bridge import CalBridge

#: exported names loaded on first use (the bridge pulls in the store, SQLAlchemy, ...)
_LAZY = {
    "BridgeConfig": "._config",
    "CalBridge": ".bridge",
    "RoutingConfig": "._config",
    "SyncCalBridge": "._blocking",
}

__all__ = [
    "DEFAULT_PLUGINS",
    "Account",
    "AccountStatus",
    "Attendee",
    "AuthorizationRequest",
    "BreakerPolicy",
    "BridgeConfig",
    "CalBridge",
    "Calendar",
    "Capabilities",
    "Change",
    "ChangeKind",
    "ChangePage",
    "ChangeSource",
    "Channel",
    "ChannelLookup",
    "ChannelRequest",
    "CircuitBreaker",
    "Event",
    "EventDraft",
    "EventStatus",
    "EventTime",
    "FreeBusy",
    "FreeBusyStatus",
    "Notification",
    "NotificationKind",
    "Person",
    "PluginHost",
    "Provider",
    "ProviderCall",
    "ProviderInfo",
    "ProviderRegistrar",
    "ProviderSettings",
    "RateBudget",
    "RateLimiter",
    "RateQuota",
    "RateWindow",
    "RawPayload",
    "ResponseStatus",
    "RetryPolicy",
    "RoutingConfig",
    "Secret",
    "SeriesRole",
    "Session",
    "StaticTokenSource",
    "SyncCalBridge",
    "TimeKind",
    "TimeRange",
    "TokenGrant",
    "TokenSet",
    "TokenSource",
    "Transparency",
    "Visibility",
    "WebhookReply",
    "WebhookRequest",
    "background_calls",
    "circuit_breaker",
    "errors",
    "get_plugin_host",
    "hookimpl",
    "install_rate_budget",
    "make_converter",
    "make_http_client",
    "parse_retry_after",
    "prefetched_pages",
    "rate_budget",
    "read_json",
    "redact_url",
    "send",
    "signal_when_sent",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("calbridge")
        except PackageNotFoundError:  # pragma: no cover - running from a checkout
            from ._version import __version__

            return __version__
    raise AttributeError(f"module 'calbridge' has no attribute {name!r}")
