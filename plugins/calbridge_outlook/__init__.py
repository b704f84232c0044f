"""calbridge's Outlook (Microsoft Graph v1.0) provider plugin.

Registers :class:`OutlookProvider` as ``outlook`` and answers
:func:`calbridge.hookspecs.make_change_source` with push (Graph subscriptions) when a
public callback URL is configured. The Graph sandbox lives in
:mod:`calbridge_outlook.sandbox`.
"""

from __future__ import annotations

import calbridge

from ._provider import OutlookProvider

__all__ = ["OutlookProvider", "make_change_source", "register_providers"]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    """Register the ``outlook`` provider."""
    register(OutlookProvider)


@calbridge.hookimpl
def make_change_source(
    provider: calbridge.Provider, callback_url: str | None
) -> calbridge.ChangeSource | None:
    """Push through Graph subscriptions when a public callback URL is configured."""
    if provider.name == OutlookProvider.name and callback_url:
        return calbridge.ChangeSource(kind="push", reason="outlook Graph subscriptions")
    return None
