"""The Graph sandbox: a local emulator of Microsoft Graph's calendar API over a sandbox world.

Microsoft-native users' calendars *are* the world's native calendars, so the Cronofy
sandbox's view of a Microsoft-native user sees every write made here, and the other way
round. Served under ``/graph`` by ``calbridge sandbox serve`` (``/graph/v1.0/...`` and
``/graph/{tenant}/oauth2/v2.0/authorize|token``). See docs/providers/outlook.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import calbridge

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from calbridge.hookspecs import SandboxRegistrar
    from calbridge.sandbox import World

__all__ = ["create_app", "register_sandboxes"]


def create_app(world: World) -> ASGIApp:
    """The Graph sandbox ASGI app for ``world``."""
    from ._app import GraphSandbox

    return GraphSandbox(world).app


@calbridge.hookimpl
def register_sandboxes(register: SandboxRegistrar) -> None:
    """Register the Graph sandbox under ``/graph``."""
    register("graph", create_app)
