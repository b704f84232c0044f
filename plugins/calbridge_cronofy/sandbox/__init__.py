"""The Cronofy sandbox: a faithful local emulator of Cronofy's API over a sandbox world.

``create_app(world)`` returns the ASGI app serving both Cronofy hosts (api: ``/v1/...``,
``/oauth/token``; app: ``/oauth/authorize``). Every app built for one world shares one
:class:`CronofyEngine` (``engine_for(world)``), whose ``settings`` tune delays, the sync
window, page size, rate limits and channel limits. See docs/sandbox.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import calbridge

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from calbridge.hookspecs import SandboxRegistrar
    from calbridge.sandbox import World

    from ._engine import CronofyEngine, engine_for
    from ._state import SandboxSettings

__all__ = ["CronofyEngine", "SandboxSettings", "create_app", "engine_for", "register_sandboxes"]


def create_app(world: World) -> ASGIApp:
    """The Cronofy sandbox ASGI app (both the api and the app host) for ``world``."""
    from ._app import CronofySandbox

    app: ASGIApp = CronofySandbox(world).app
    return app


@calbridge.hookimpl
def register_sandboxes(register: SandboxRegistrar) -> None:
    """Register the Cronofy sandbox under ``/cronofy``."""
    register("cronofy", create_app)


def __getattr__(name: str) -> Any:
    # lazy: the plugin host imports this module at start-up; the sandbox loads on first use
    if name in ("CronofyEngine", "engine_for"):
        from . import _engine

        return getattr(_engine, name)
    if name == "SandboxSettings":
        from ._state import SandboxSettings

        return SandboxSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
