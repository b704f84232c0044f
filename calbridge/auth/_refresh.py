"""Single-flight token refresh across coroutines and processes, backed by the store.

Protocol (reliability.md §2.4):

1. In-process, one ``asyncio.Lock`` per (store, account) lets one coroutine refresh.
2. Across processes, a lease on the credentials row (``refresh_owner`` /
   ``refresh_lease_until_ms``) is taken in a short write transaction (``BEGIN IMMEDIATE`` on
   SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL). No transaction is held across HTTP.
3. After acquiring, the row is re-read: when someone else already replaced the tokens,
   theirs are used and no request is made.
4. The new tokens are stored with a compare-and-swap on (generation, old refresh token)
   before anyone uses them; a response without a refresh token keeps the stored one.
5. ``invalid_grant`` (:class:`~calbridge.errors.ReauthRequired`): re-read; if the tokens
   changed meanwhile we lost a race and use the winner's tokens. Otherwise the account is
   marked ``needs_reauth`` (compare-and-set, so the hook fires once across processes).
6. ``invalid_client`` (:class:`~calbridge.errors.ConfigurationError` from the provider):
   the provider is paused for everyone (:class:`ProviderPaused`); no user is marked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Final

from calbridge.errors import ConfigurationError, ReauthRequired, Unavailable
from calbridge.models import Account, AccountStatus, TokenSet
from calbridge.provider import Provider
from calbridge.store import CredentialRecord, Store, offload

__all__ = ["ProviderPaused", "StoreTokenSource", "mark_needs_reauth"]

log = logging.getLogger("calbridge.auth")

_LOCKS: Final[
    weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, str], asyncio.Lock]]
] = weakref.WeakKeyDictionary()


class ProviderPaused(ConfigurationError):
    """The provider refused calbridge's own credentials (``invalid_client``); it is paused
    for every account until an operator fixes the settings and resumes it
    (``Store.resume_provider``)."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(
            f"provider {provider!r} is paused ({reason}): fix its client_id/client_secret, then "
            "resume it (Store.resume_provider)"
        )
        self.provider = provider
        self.reason = reason


def _local_lock(store: Store, account_id: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    locks = _LOCKS.setdefault(loop, {})
    return locks.setdefault((id(store), account_id), asyncio.Lock())


def mark_needs_reauth(
    store: Store,
    account_id: str,
    *,
    reason: str,
    notify: Callable[..., None] | None,
) -> bool:
    """Mark an account ``needs_reauth``; fire ``notify`` only if this call changed it.

    The status change is a compare-and-set, so among processes racing to mark the same
    account exactly one fires the hook. Also writes an audit entry. Synchronous: from
    async code run it with :func:`calbridge.store.offload` (``StoreTokenSource`` runs the
    DB part and ``notify`` that way: listeners read and write the store too).
    """
    changed = _set_needs_reauth(store, account_id, reason)
    if changed is None:
        return False
    _notify(notify, changed, reason)
    return True


def _set_needs_reauth(
    store: Store, account_id: str, reason: str
) -> tuple[Account, AccountStatus] | None:
    changed = store.accounts.set_account_status(
        account_id, AccountStatus.NEEDS_REAUTH, reason=reason
    )
    if changed is not None:
        store.audit_log.audit(
            "auth",
            "needs_reauth",
            app_user_id=changed[0].app_user_id,
            account_id=account_id,
            detail={"reason": reason},
        )
    return changed


def _notify(
    notify: Callable[..., None] | None, changed: tuple[Account, AccountStatus], reason: str
) -> None:
    if notify is None:
        return
    account, old = changed
    try:
        notify(account, old, reason)
    except Exception:  # a plugin failing must not break the refresh path
        log.exception("account_status_changed hook failed for account %s", account.id)


class StoreTokenSource:
    """A :class:`calbridge.TokenSource` over the store, with single-flight refresh.

    Args:
        store: the shared :class:`~calbridge.store.Store` (with a vault).
        provider: the provider instance that performs ``refresh_tokens``.
        account_id: calbridge's account id.
        notify: called ``(account, old_status, reason)`` once when the account becomes
            ``needs_reauth`` (pass ``plugin_host.notify_account_status_changed``).
        leeway: refresh this many seconds before ``expires_at``.
        assumed_lifetime: when a token has no ``expires_at``, treat it as expiring this
            many seconds after it was stored (never "valid forever").
        lease_ms: how long a refresh lease lasts (longer than the token request timeout).
        wait_timeout: how long to wait for another process's refresh before giving up.
    """

    def __init__(
        self,
        store: Store,
        provider: Provider,
        account_id: str,
        *,
        notify: Callable[..., None] | None = None,
        leeway: float = 60.0,
        assumed_lifetime: int = 3600,
        lease_ms: int = 30_000,
        wait_timeout: float = 60.0,
        poll_interval: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        self.account_id = account_id
        self.notify = notify
        self.leeway = leeway
        self.assumed_lifetime = assumed_lifetime
        self.lease_ms = lease_ms
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.owner = uuid.uuid4().hex
        #: token-endpoint calls made by this instance (for tests and metrics)
        self.refresh_calls = 0

    def __repr__(self) -> str:
        return f"<StoreTokenSource account={self.account_id!r} provider={self.provider.name!r}>"

    # -- TokenSource --------------------------------------------------------------------

    async def get(self) -> TokenSet:
        """The current tokens, refreshed first when they expire within ``leeway``."""
        record = await self._read()
        if not self._expired(record):
            return record.tokens
        return await self._refresh(record.tokens, force=False)

    async def refresh(self, stale: TokenSet) -> TokenSet:
        """Refresh after the provider refused ``stale`` (401), unless already replaced."""
        return await self._refresh(stale, force=True)

    # -- internals ----------------------------------------------------------------------

    def _expired(self, record: CredentialRecord) -> bool:
        expires_at = record.tokens.expires_at
        if expires_at is None:  # unknown lifetime: assume one, never "valid forever"
            expires_at = record.updated_at + self.assumed_lifetime
        return int(expires_at) - self.leeway <= self.clock()

    def _needs(self, current: CredentialRecord, stale: TokenSet, force: bool) -> bool:
        if current.tokens.access_token != stale.access_token:
            return False  # someone replaced the tokens: use theirs
        return force or self._expired(current)

    async def _read(self) -> CredentialRecord:
        record = await offload(self.store.credentials.get_tokens, self.account_id)
        account = await offload(self.store.accounts.get_account, self.account_id)
        if record is None or account is None:
            raise ReauthRequired("the account has no stored tokens", provider=self.provider.name)
        if account.status is not AccountStatus.ACTIVE:
            raise ReauthRequired(
                f"the account is {account.status.value}", provider=self.provider.name
            )
        return record

    async def _check_paused(self) -> None:
        status = await offload(self.store.accounts.provider_status, self.provider.name)
        if status is not None and status.paused:
            raise ProviderPaused(self.provider.name, status.reason or "paused")

    async def _refresh(self, stale: TokenSet, *, force: bool) -> TokenSet:
        async with _local_lock(self.store, self.account_id):
            record = await self._read()
            if not self._needs(record, stale, force):
                return record.tokens
            await self._check_paused()
            await self._acquire_lease()
            try:
                record = await self._read()  # re-read after acquiring
                if not self._needs(record, stale, force):
                    return record.tokens
                return await self._refresh_locked(record)
            finally:
                await offload(
                    self.store.credentials.release_refresh_lease, self.account_id, self.owner
                )

    async def _acquire_lease(self) -> None:
        deadline = time.monotonic() + self.wait_timeout
        while not await offload(
            self.store.credentials.acquire_refresh_lease,
            self.account_id,
            self.owner,
            ttl_ms=self.lease_ms,
        ):
            if time.monotonic() > deadline:
                raise Unavailable(
                    "another process has held the token refresh for too long",
                    provider=self.provider.name,
                )
            await asyncio.sleep(self.poll_interval * (0.5 + random.random()))  # noqa: S311

    async def _refresh_locked(self, record: CredentialRecord) -> TokenSet:
        provider = self.provider.name
        self.refresh_calls += 1
        try:
            new = await self.provider.refresh_tokens(record.tokens)
        except ReauthRequired:
            latest = await offload(self.store.credentials.get_tokens, self.account_id)
            if latest is not None and (
                latest.generation != record.generation
                or latest.tokens.refresh_token != record.tokens.refresh_token
            ):
                log.info(
                    "lost a refresh race for account %s; using the winner's tokens", self.account_id
                )
                return latest.tokens
            changed = await offload(_set_needs_reauth, self.store, self.account_id, "invalid_grant")
            if changed is not None:
                await offload(_notify, self.notify, changed, "invalid_grant")
            raise
        except ConfigurationError as exc:
            if isinstance(exc, ProviderPaused):
                raise
            await offload(self.store.accounts.pause_provider, provider, reason="invalid_client")
            await offload(
                self.store.audit_log.audit, "auth", "provider_paused", detail={"provider": provider}
            )
            raise ProviderPaused(provider, "invalid_client") from exc
        saved = await offload(
            self.store.credentials.swap_tokens,
            self.account_id,
            expected_generation=record.generation,
            expected_refresh_token=record.tokens.refresh_token,
            new=new,
        )
        if saved is None:
            # our lease expired and someone else stored newer tokens: theirs win
            latest = await self._read()
            return latest.tokens
        return saved.tokens
