"""calbridge's Google Calendar (v3) provider plugin.

Registers :class:`GoogleProvider` as ``google`` and answers
:func:`calbridge.hookspecs.make_change_source` with push (events.watch channels) when a
public callback URL is configured. The Google sandbox lives in
:mod:`calbridge_google.sandbox`.
"""

from __future__ import annotations

import calbridge

from ._convert import client_event_id
from ._provider import GoogleProvider

__all__ = ["GoogleProvider", "client_event_id", "make_change_source", "register_providers"]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    """Register the ``google`` provider."""
    register(GoogleProvider)


@calbridge.hookimpl
def make_change_source(
    provider: calbridge.Provider, callback_url: str | None
) -> calbridge.ChangeSource | None:
    """Push through events.watch channels when a public callback URL is configured."""
    if provider.name == GoogleProvider.name and callback_url:
        return calbridge.ChangeSource(kind="push", reason="google events.watch channels")
    return None
