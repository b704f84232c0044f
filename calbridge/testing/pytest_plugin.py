"""pytest fixtures for calbridge plugin authors.

Enable with ``pytest_plugins = ["calbridge.testing.pytest_plugin"]`` in ``conftest.py``.
"""

from __future__ import annotations

import pytest

from .._manager import PluginHost
from . import MemoryBackend, fresh_plugin_host, memory_plugin


@pytest.fixture
def plugin_host() -> PluginHost:
    """A fresh, strict plugin host: built-ins plus the reference ``memory`` provider."""
    return fresh_plugin_host(memory_plugin)


@pytest.fixture
def memory_backend() -> MemoryBackend:
    """An empty in-memory 'remote service' for the reference provider."""
    return MemoryBackend()
