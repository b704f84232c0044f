"""GDPR erasure of one application user (:meth:`calbridge.CalBridge.forget_user`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .bridge import CalBridge

__all__ = ["ForgetReport", "forget_user"]


@attrs.frozen(kw_only=True)
class ForgetReport:
    """What :meth:`CalBridge.forget_user` removed."""

    app_user_id: str
    accounts: int
    channels_stopped: int
    tokens_revoked: int
    revoke_failures: tuple[str, ...] = ()


async def forget_user(bridge: CalBridge, app_user_id: str) -> ForgetReport:
    """GDPR erasure: revoke tokens, stop channels, purge cache, id map and tokens.

    An audit line (without personal data beyond the app's user id) is kept.
    """
    from .store import offload

    accounts = await bridge.accounts(app_user_id)
    stopped = revoked = 0
    failures: list[str] = []
    channels = bridge.changes.channels
    for account in accounts:
        assert account.id is not None
        provider = bridge.runtime.provider(account.provider)
        session = bridge.runtime.session(account)
        stopped += len(await offload(bridge.store.channels.list_channels, account_id=account.id))
        try:  # closes provider channels, drops their rows and every job schedule
            await channels.on_account_disconnected(account.id)
        except Exception as exc:  # keep erasing; report what failed
            failures.append(f"{account.provider} channels: {type(exc).__name__}")
        await offload(channels.park_account, account.id)  # queued jobs
        try:
            tokens = await session.access_token()
            await provider.revoke_tokens(tokens)
            revoked += 1
        except Exception as exc:  # the local erasure must happen regardless
            failures.append(f"{account.provider} revoke: {type(exc).__name__}")
    audit = {
        "accounts": len(accounts),
        "channels_stopped": stopped,
        "tokens_revoked": revoked,
        "failures": failures,
    }
    await offload(_erase, bridge, app_user_id, [a.id for a in accounts], audit)
    bridge.runtime.router.invalidate(app_user_id)
    for account in accounts:
        bridge._calendars.forget(account.id or "")
    return ForgetReport(
        app_user_id=app_user_id,
        accounts=len(accounts),
        channels_stopped=stopped,
        tokens_revoked=revoked,
        revoke_failures=tuple(failures),
    )


def _erase(
    bridge: CalBridge, app_user_id: str, account_ids: list[str | None], audit: dict[str, Any]
) -> None:
    """The local erasure, in one write transaction, then its audit line (a store thread)."""
    bridge.store.erase_user(app_user_id, account_ids)
    bridge.runtime.router.invalidate(app_user_id)
    bridge.store.audit_log.audit("bridge", "user.forgotten", app_user_id=app_user_id, detail=audit)
