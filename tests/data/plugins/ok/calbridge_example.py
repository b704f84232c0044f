"""A third-party provider plugin, as a user would write it."""

from __future__ import annotations

from typing import ClassVar

import calbridge


class ExampleProvider(calbridge.Provider):
    """Lists one calendar, cannot write."""

    name: ClassVar[str] = "example"
    capabilities: ClassVar[calbridge.Capabilities] = calbridge.Capabilities(write=False)

    async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
        return [calbridge.Calendar(id="main", provider=self.name, name="Main")]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    register(ExampleProvider, aliases=("ex",))
