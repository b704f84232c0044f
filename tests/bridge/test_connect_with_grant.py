"""``CalBridge.connect_with_grant``: credentials obtained without an OAuth redirect are
stored, audited, routed and observed exactly as a completed OAuth connect's are."""

from __future__ import annotations

import pytest

from calbridge import AccountStatus, TokenGrant
from calbridge.errors import ProviderNotFoundError

from .conftest import BridgeRig


async def test_a_grant_connects_reactivates_and_is_audited(rig: BridgeRig) -> None:
    bridge = rig.bridge
    account_id = await rig.connect("amy", "google", "amy@example.com")
    store = bridge.store
    account = store.accounts.get_account(account_id)
    record = store.credentials.get_tokens(account_id)
    assert account is not None
    assert record is not None
    tokens = record.tokens
    changed = store.accounts.set_account_status(
        account_id, AccountStatus.NEEDS_REAUTH, reason="test"
    )
    assert changed is not None
    seen: list[tuple[str, str]] = []
    bridge.runtime.status_listeners.append(lambda acc, old, why: seen.append((str(old), why)))

    grant = TokenGrant(
        tokens=tokens,
        provider_account_id=account.provider_account_id,
        email="amy@example.com",
        details={"auth": "imported"},
    )
    again = await bridge.connect_with_grant("amy", "google", grant, method="imported")

    assert again.id == account_id  # the same account, not a second one
    assert again.status is AccountStatus.ACTIVE
    assert store.accounts.account_details(account_id)["auth"] == "imported"
    assert seen == [(str(AccountStatus.NEEDS_REAUTH), "reconnected")]
    stored = store.credentials.get_tokens(account_id)
    assert stored is not None
    assert stored.tokens.access_token.reveal() == tokens.access_token.reveal()
    assert stored.generation > record.generation
    [entry, *_] = [
        e for e in store.audit_log.audit_entries(app_user_id="amy") if e.action == "connected"
    ]
    assert entry.detail == {"provider": "google", "auth": "imported"}
    assert (await bridge.aroute("amy")).account_id == account_id  # routed again
    assert [c.id for c in await bridge.calendars("amy")]  # the stored tokens work
    assert store.channels.list_channels(account_id=account_id)  # observed at once


async def test_an_unknown_provider_is_refused_and_nothing_is_stored(rig: BridgeRig) -> None:
    account_id = await rig.connect("amy", "google", "amy@example.com")
    record = rig.bridge.store.credentials.get_tokens(account_id)
    assert record is not None
    grant = TokenGrant(tokens=record.tokens, provider_account_id="x-1")
    with pytest.raises(ProviderNotFoundError):
        await rig.bridge.connect_with_grant("amy", "gogle", grant, method="imported")
    providers = {a.provider for a in await rig.bridge.accounts("amy")}
    assert providers == {"google"}
