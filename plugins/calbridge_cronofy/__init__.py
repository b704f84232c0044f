"""calbridge's Cronofy provider plugin, written against calbridge's public API only.

It registers the ``cronofy`` provider and answers ``make_change_source`` with push
(Cronofy notification channels) when a public callback URL is configured::

    settings = calbridge.ProviderSettings(
        client_id="...", client_secret="...", options={"data_center": "uk"})

Point it at the sandbox with ``base_urls={"api": URL, "app": URL}``. See
``docs/providers/cronofy.md``.
"""

from __future__ import annotations

import calbridge

from ._errors import AccountLocked, PaymentRequired
from ._hosts import DATA_CENTERS, Hosts
from ._oauth import DEFAULT_SCOPES, ServiceAccountAuthorization
from ._provider import CronofyProvider
from ._push import AuthorizationCallback, signature_valid
from ._push import sign as sign_notification
from ._wire import CronofyCalendar, LinkingProfile, Profile, TokenResponse, UserInfo

__all__ = [
    "DATA_CENTERS",
    "DEFAULT_SCOPES",
    "AccountLocked",
    "AuthorizationCallback",
    "CronofyCalendar",
    "CronofyProvider",
    "Hosts",
    "LinkingProfile",
    "PaymentRequired",
    "Profile",
    "ServiceAccountAuthorization",
    "TokenResponse",
    "UserInfo",
    "make_change_source",
    "register_providers",
    "sign_notification",
    "signature_valid",
]


@calbridge.hookimpl
def register_providers(register: calbridge.ProviderRegistrar) -> None:
    """Register :class:`CronofyProvider` as ``cronofy``."""
    register(CronofyProvider)


@calbridge.hookimpl
def make_change_source(
    provider: calbridge.Provider, callback_url: str | None
) -> calbridge.ChangeSource | None:
    """Push through Cronofy channels when a public callback URL is configured."""
    if isinstance(provider, CronofyProvider) and callback_url:
        return calbridge.ChangeSource(kind="push", reason="cronofy notification channels")
    return None
