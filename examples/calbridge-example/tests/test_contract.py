"""The example provider passes calbridge's provider contract against its fake API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from calbridge_example import ExampleProvider
from calbridge_example.fake import FakeExampleAPI

import calbridge
from calbridge.testing import ContractHarness, ProviderContract


class TestExampleProvider(ProviderContract):
    """ProviderContract against the example provider and its in-process fake API."""

    @pytest.fixture
    async def contract_harness(self) -> AsyncIterator[ContractHarness]:
        api = FakeExampleAPI()
        http = api.client()
        provider = ExampleProvider(
            http=http,
            settings=calbridge.ProviderSettings(
                base_urls={"api": "https://example.test/v1"}, options={"page_size": 50}
            ),
        )
        session = calbridge.Session(
            account=calbridge.Account(
                app_user_id="alice", provider="example", provider_account_id="alice"
            ),
            tokens=calbridge.StaticTokenSource(tokens=calbridge.TokenSet(access_token=api.token)),
        )
        yield ContractHarness(
            provider=provider, session=session, calendar_id=api.calendar_id, seeder=api
        )
        await http.aclose()


def test_the_plugin_is_found_through_its_entry_point() -> None:
    """Installed, the plugin registers ``example`` (and ``ex``) from its distribution."""
    host = calbridge.PluginHost(entry_points=True, strict=True)

    info = host.providers()["example"]

    assert info.cls is ExampleProvider
    assert info.source.startswith("calbridge-example ")
    assert host.provider_class("ex") is ExampleProvider
