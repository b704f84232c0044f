"""Fixtures of the auth suite: stores on SQLite and PostgreSQL, a loopback token endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa

import calbridge
from calbridge.auth.testing import (
    LoopbackOAuthProvider,
    OtherLoopbackProvider,
    StatusHookRecorder,
    TokenEndpoint,
)
from calbridge.provider import ProviderSettings
from calbridge.sandbox import LoopbackServer, serve_in_thread
from calbridge.store import KeyRing, Store, Vault, generate_key
from calbridge.store.testing import db_url, engine, fresh_postgres_url

__all__ = [
    "db_url",
    "endpoint",
    "engine",
    "fresh_postgres_url",
    "keys_spec",
    "store",
    "token_server",
]


@pytest.fixture
def keys_spec() -> str:
    return f"k1:{generate_key()}"


@pytest.fixture
def store(engine: sa.Engine, keys_spec: str) -> Store:
    return Store(engine, Vault(KeyRing.parse(keys_spec)))


@pytest.fixture
def endpoint() -> TokenEndpoint:
    return TokenEndpoint()


@pytest.fixture
def token_server(endpoint: TokenEndpoint) -> Iterator[LoopbackServer]:
    with serve_in_thread(endpoint.app()) as server:
        yield server


def settings_for(endpoint: TokenEndpoint, server: LoopbackServer) -> ProviderSettings:
    return ProviderSettings(
        client_id="client-1",
        client_secret=endpoint.client_secret,
        base_urls={"token": f"{server.base_url}/token"},
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture
def provider(
    http: httpx.AsyncClient, endpoint: TokenEndpoint, token_server: LoopbackServer
) -> LoopbackOAuthProvider:
    return LoopbackOAuthProvider(http=http, settings=settings_for(endpoint, token_server))


@pytest.fixture
def other_provider(
    http: httpx.AsyncClient, endpoint: TokenEndpoint, token_server: LoopbackServer
) -> OtherLoopbackProvider:
    return OtherLoopbackProvider(http=http, settings=settings_for(endpoint, token_server))


@pytest.fixture
def hooks() -> tuple[calbridge.PluginHost, StatusHookRecorder]:
    host = calbridge.PluginHost(entry_points=False, builtins=(), strict=True)
    recorder = StatusHookRecorder()
    host.register(recorder, name="recorder")
    return host, recorder
