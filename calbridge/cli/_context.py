"""Shared CLI plumbing: build a bridge from ``--config`` / ``--database-url`` / environment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from .._config import BridgeConfig

__all__ = ["bridge_options", "make_bridge", "run"]

F = TypeVar("F", bound=Callable[..., Any])


def bridge_options(fn: F) -> F:
    """Add ``--config`` and ``--database-url`` to a command."""
    fn = click.option(
        "--database-url",
        envvar="CALBRIDGE_DATABASE_URL",
        default=None,
        help="Store URL (sqlite:///path or postgresql+psycopg://...); "
        "default ./calbridge.db or $CALBRIDGE_DATABASE_URL.",
    )(fn)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="CALBRIDGE_CONFIG",
        default=None,
        help="A calbridge TOML config file (or $CALBRIDGE_CONFIG).",
    )(fn)


def make_config(config_path: str | None, database_url: str | None) -> BridgeConfig:
    """The configuration the options ask for."""
    config = BridgeConfig.from_file(config_path) if config_path else BridgeConfig.from_env()
    if database_url:
        import attrs

        config = attrs.evolve(config, database_url=database_url)
    return config


def make_bridge(config_path: str | None, database_url: str | None) -> Any:
    """A :class:`calbridge.CalBridge` for the options."""
    from ..bridge import CalBridge

    return CalBridge(make_config(config_path, database_url))


T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async CLI body."""

    async def main() -> T:
        return await factory()

    return asyncio.run(main())
