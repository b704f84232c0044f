"""A real Radicale server (from PyPI) on loopback, started once for the CalDAV tests with a
throwaway storage folder; each test gets a fresh calendar on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from calbridge_caldav.testing import CalDAVRig, RadicaleServer, caldav_rig

USERS = {
    "alice": "alice-app-password",
    "bob": "bob-app-password",
    "carol": "carol-app-password",
    "dave": "dave-app-password",
    "erin": "erin-app-password",
    "frank": "frank-app-password",
}


@pytest.fixture(scope="session")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadicaleServer]:
    folder: Path = tmp_path_factory.mktemp("radicale")
    with RadicaleServer(folder, users=dict(USERS)) as server:
        yield server


@pytest.fixture
async def rig(radicale: RadicaleServer) -> AsyncIterator[CalDAVRig]:
    async with caldav_rig(radicale, "alice", page_size=5) as made:
        yield made
