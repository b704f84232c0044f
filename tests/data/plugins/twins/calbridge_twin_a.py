"""One of two plugins that both claim the provider name 'twin'."""

from __future__ import annotations

from typing import ClassVar

import calbridge


class Twin(calbridge.Provider):
    """A provider named twin."""

    name: ClassVar[str] = "twin"

    async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
        return []


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    register(Twin)
