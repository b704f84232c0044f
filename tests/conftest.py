"""Shared test configuration."""

from __future__ import annotations

pytest_plugins = ["calbridge.testing.pytest_plugin"]
