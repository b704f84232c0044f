"""A read-only example provider plugin for calbridge.

Registered through the ``calbridge`` entry-point group (see ``pyproject.toml``); the
``register_providers`` hook hands calbridge the provider class.
"""

from __future__ import annotations

import calbridge

from ._provider import ExampleProvider

__all__ = ["ExampleProvider", "register_providers"]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    """Register :class:`ExampleProvider` as ``example`` (alias ``ex``)."""
    register(ExampleProvider, aliases=("ex",))
