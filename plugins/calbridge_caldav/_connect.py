"""Connecting a CalDAV account: a user name and an app password, no OAuth.

CalDAV servers authorise with HTTP Basic (iCloud, Fastmail, Nextcloud and Radicale all
take an app-specific password). :func:`connect` checks the credentials against the server
(``current-user-principal``), then hands them to :meth:`calbridge.CalBridge.connect_with_grant`,
which stores them the way an OAuth grant is stored: the password sealed in calbridge's token
vault as the ``access_token`` of a :class:`calbridge.TokenSet` (the user name and an
optional server URL in its non-secret ``extra``), one audit entry, and the account observed
at once (polling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from calbridge import Account, Secret, TokenGrant, TokenSet
from calbridge.errors import ConfigurationError

from ._provider import CalDAVProvider

if TYPE_CHECKING:
    from calbridge.bridge import CalBridge

__all__ = ["caldav_credentials", "connect"]


def caldav_credentials(
    username: str, password: str | Secret, *, server: str | None = None
) -> TokenSet:
    """The token set calbridge keeps for a CalDAV account (the password is the secret)."""
    if not username:
        raise ConfigurationError("a CalDAV account needs a user name")
    extra = {"username": username}
    if server:
        extra["server"] = server
    return TokenSet(access_token=password, token_type="Basic", extra=extra)  # noqa: S106


async def connect(
    bridge: CalBridge,
    app_user_id: str,
    *,
    username: str,
    password: str | Secret,
    server: str | None = None,
    email: str | None = None,
) -> Account:
    """Connect ``app_user_id``'s CalDAV account and start observing it.

    Args:
        bridge: the application's bridge (its store must have vault keys).
        username: the CalDAV user name.
        password: the app password (kept only in the vault, sealed).
        server: the account's own server URL; by default the provider's
            ``base_urls.api``.
        email: the address shown for the account (default: the user name when it is one).

    Raises:
        ReauthRequired: the server refused the credentials (nothing is stored).
        ConfigurationError: no vault keys, or no server URL.
    """
    bridge.runtime.require_vault()  # before the server sees the password
    provider = bridge.runtime.provider("caldav")
    assert isinstance(provider, CalDAVProvider)
    tokens = caldav_credentials(username, password, server=server)
    principal = await provider.principal_of(tokens)
    grant = TokenGrant(
        tokens=tokens,
        provider_account_id=f"{provider.dav.server(tokens)}{principal.lstrip('/')}",
        email=email or (username if "@" in username else None),
        details={"auth": "basic"},
    )
    return await bridge.connect_with_grant(app_user_id, "caldav", grant, method="basic")
