"""The reference provider passes the provider contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from calbridge.testing import ContractHarness, MemoryBackend, ProviderContract, memory_harness


class TestMemoryProvider(ProviderContract):
    """ProviderContract against the in-memory reference provider."""

    @pytest.fixture
    async def contract_harness(self) -> AsyncIterator[ContractHarness]:
        harness = await memory_harness(MemoryBackend())
        yield harness
        await harness.provider.http.aclose()
