"""The Google Calendar sandbox: a faithful local emulator of Calendar v3 over a sandbox world.

It is a *view* of :class:`calbridge.sandbox.World`: a Google-native user's calendars and
events are the world's native ones, so a change made here shows in every other provider
sandbox that fronts the same user (Cronofy's view of a Google-backed profile, say).

``calbridge sandbox serve`` mounts it under ``/google``; in-process::

    world = World()
    app = build_app(world)                   # includes /google
    google = world.views["google"]           # GoogleSandbox: expire_sync_tokens, fail_next ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import calbridge

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from calbridge.hookspecs import SandboxRegistrar
    from calbridge.sandbox import World

    from ._app import GoogleSandbox

__all__ = ["create_app", "google_sandbox", "register_sandboxes"]


def google_sandbox(world: World) -> GoogleSandbox:
    """The world's Google view (created on first use; one per world)."""
    from ._app import GoogleSandbox

    view = world.views.get("google")
    if isinstance(view, GoogleSandbox):
        return view
    return GoogleSandbox(world)


def create_app(world: World) -> ASGIApp:
    """The Google sandbox ASGI app for ``world`` (served under ``/google``)."""
    return google_sandbox(world).app


@calbridge.hookimpl
def register_sandboxes(register: SandboxRegistrar) -> None:
    """Register the Google sandbox under ``/google``."""
    register("google", create_app)
