"""calbridge's sandbox machinery: one in-memory world of test users' native calendars.

Provider sandboxes (Cronofy, Google, Microsoft) are views of one :class:`World`: they
render its native events in their own wire format, write through it, and learn of
changes by :meth:`World.subscribe`. The world also holds the controllable :class:`Clock`,
the :class:`Faults` and the :class:`WebhookDelivery` every sandbox shares.

Quick start (in-process)::

    import httpx
    from calbridge.sandbox import World, build_app

    world = World()                              # manual clock: deterministic
    world.add_application("client-id", "client-secret")
    alice = world.add_user("alice@example.com", native="google")
    app = build_app(world)                       # every installed provider sandbox
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sandbox") as http:
        ...                                      # e.g. http://sandbox/cronofy/v1/...
    await world.clock.advance(300)               # run what falls due in 5 minutes

Over loopback: ``with serve_in_thread(build_app(world)) as server: server.base_url``.
See docs/sandbox.md.
"""

from __future__ import annotations

from ._clock import Clock, Timer, TimerCallback
from ._control import (
    RequestCounts,
    counting,
    event_time_from_json,
    event_time_json,
    native_event_json,
    request_counts,
)
from ._delivery import DeliveryAttempt, DeliveryPolicy, WebhookDelivery
from ._faults import (
    FaultAction,
    Faults,
    InjectedError,
    NotificationFate,
    ProviderFaults,
    mount_path,
)
from ._model import ChangeKind, NativeCalendar, NativeChange, NativeEvent, NativeProvider, User
from ._oauth import (
    AuthorizationCode,
    Consent,
    Grant,
    GrantRefusal,
    GrantRefused,
    GrantServer,
    PkceChallenge,
    PkceMethod,
    PkcePolicy,
    TokenInfo,
    TokenShapes,
    opaque_token,
    pkce_s256,
)
from ._pagetokens import PageTokens
from ._recurrence import Occurrence, expand
from ._server import LoopbackServer, build_app, installed_sandboxes, serve_in_thread
from ._throttle import RateLimit, Throttle, Throttled, retry_after_headers
from ._tls import TlsFiles, make_tls_files
from ._world import NativeListener, UnknownCalendar, UnknownEvent, UnknownUser, World

__all__ = [
    "AuthorizationCode",
    "ChangeKind",
    "Clock",
    "Consent",
    "DeliveryAttempt",
    "DeliveryPolicy",
    "FaultAction",
    "Faults",
    "Grant",
    "GrantRefusal",
    "GrantRefused",
    "GrantServer",
    "InjectedError",
    "LoopbackServer",
    "NativeCalendar",
    "NativeChange",
    "NativeEvent",
    "NativeListener",
    "NativeProvider",
    "NotificationFate",
    "Occurrence",
    "PageTokens",
    "PkceChallenge",
    "PkceMethod",
    "PkcePolicy",
    "ProviderFaults",
    "RateLimit",
    "RequestCounts",
    "Throttle",
    "Throttled",
    "Timer",
    "TimerCallback",
    "TlsFiles",
    "TokenInfo",
    "TokenShapes",
    "UnknownCalendar",
    "UnknownEvent",
    "UnknownUser",
    "User",
    "WebhookDelivery",
    "World",
    "build_app",
    "counting",
    "event_time_from_json",
    "event_time_json",
    "expand",
    "installed_sandboxes",
    "make_tls_files",
    "mount_path",
    "native_event_json",
    "opaque_token",
    "pkce_s256",
    "request_counts",
    "retry_after_headers",
    "serve_in_thread",
]
