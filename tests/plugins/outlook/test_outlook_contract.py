"""The Outlook plugin passes calbridge's ProviderContract against the Graph sandbox,
over real loopback HTTP and in-process (ASGITransport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from calbridge_outlook.testing import sandbox_rig

from calbridge.testing import ContractHarness, ProviderContract


async def _harness(loopback: bool) -> AsyncIterator[ContractHarness]:
    async with sandbox_rig(loopback=loopback, page_size=5) as rig:
        yield ContractHarness(
            provider=rig.provider,
            session=rig.session,
            calendar_id=rig.calendar_id,
            settle=rig.settle,
            now=rig.now,
            page_size=5,
            callback_url=rig.callback_url,
            genuine_notification=rig.genuine_notification,
            forged_notifications=rig.forged_notifications,
            body_signed=False,
        )


class TestOutlookContractInProcess(ProviderContract):
    @pytest.fixture
    async def contract_harness(self) -> AsyncIterator[ContractHarness]:
        async for h in _harness(loopback=False):
            yield h


class TestOutlookContractLoopback(ProviderContract):
    @pytest.fixture
    async def contract_harness(self) -> AsyncIterator[ContractHarness]:
        async for h in _harness(loopback=True):
            yield h
