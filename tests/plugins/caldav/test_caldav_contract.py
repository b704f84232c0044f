"""The CalDAV plugin passes calbridge's ProviderContract against a real Radicale server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from calbridge_caldav.testing import RadicaleServer, caldav_rig

from calbridge.testing import ContractHarness, ProviderContract


class TestCalDAVContractAgainstRadicale(ProviderContract):
    @pytest.fixture
    async def contract_harness(self, radicale: RadicaleServer) -> AsyncIterator[ContractHarness]:
        async with caldav_rig(radicale, "alice", page_size=5) as rig:
            yield ContractHarness(
                provider=rig.provider,
                session=rig.session,
                calendar_id=rig.calendar_id,
                now=rig.now,
                page_size=5,
            )
