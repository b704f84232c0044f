"""Connecting a CalDAV account: a user name and an app password, no OAuth.

CalDAV servers authorise with HTTP Basic (iCloud, Fastmail, Nextcloud and Radicale all
take an app-specific password). :func:`connect` checks the credentials against the server
(``current-user-principal``), then stores the account and its credentials the way an OAuth
grant is stored: the password sealed in calbridge's token vault as the ``access_token`` of
a :class:`calbridge.TokenSet` (the user name and an optional server URL in its non-secret
``extra``), one audit entry, and the account is observed at once (polling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from calbridge import Account, AccountStatus, Secret, TokenSet
from calbridge.errors import ConfigurationError
from calbridge.store import offload, write

if TYPE_CHECKING:
    from calbridge.bridge import CalBridge

    from ._provider import CalDAVProvider

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
    runtime: Any = bridge.runtime
    runtime.require_vault()
    provider: CalDAVProvider = runtime.provider("caldav")
    tokens = caldav_credentials(username, password, server=server)
    principal = await provider.principal_of(tokens)
    server_url = provider.dav.server(tokens)
    account = await offload(
        _store,
        bridge,
        app_user_id=app_user_id,
        provider_account_id=f"{server_url}{principal.lstrip('/')}",
        email=email or (username if "@" in username else None),
        tokens=tokens,
    )
    runtime.router.invalidate(app_user_id)
    await bridge.subscribe(app_user_id)
    return account


def _store(
    bridge: CalBridge,
    *,
    app_user_id: str,
    provider_account_id: str,
    email: str | None,
    tokens: TokenSet,
) -> Account:
    store = bridge.store
    with write(store.engine) as conn:
        account = store.accounts.upsert_account(
            app_user_id=app_user_id,
            provider="caldav",
            provider_account_id=provider_account_id,
            email=email,
            details={"auth": "basic"},
            conn=conn,
        )
        assert account.id is not None
        store.credentials.save_tokens(account.id, tokens, conn=conn)
        if account.status is not AccountStatus.ACTIVE:
            changed = store.accounts.set_account_status(
                account.id, AccountStatus.ACTIVE, reason="reconnected", conn=conn
            )
            if changed is not None:
                account = changed[0]
        store.audit_log.audit(
            "auth",
            "connected",
            app_user_id=app_user_id,
            account_id=account.id,
            detail={"provider": "caldav", "auth": "basic"},
            conn=conn,
        )
    return account
