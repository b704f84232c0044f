"""The Cronofy sandbox: a faithful local emulator of Cronofy's API over a sandbox world."""

from __future__ import annotations

from typing import TYPE_CHECKING

import calbridge

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from calbridge.hookspecs import SandboxRegistrar
    from calbridge.sandbox import World

__all__ = ["create_app", "register_sandboxes"]


def create_app(world: World) -> ASGIApp:
    """The Cronofy sandbox ASGI app (both the api and the app host) for ``world``."""
    from ._app import CronofySandbox

    return CronofySandbox(world).app


@calbridge.hookimpl
def register_sandboxes(register: SandboxRegistrar) -> None:
    """Register the Cronofy sandbox under ``/cronofy``."""
    register("cronofy", create_app)
