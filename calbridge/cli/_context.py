"""Shared CLI plumbing: one configuration for every command.

Every command that touches the store takes ``--config`` (``$CALBRIDGE_CONFIG``) and
``--database-url`` (``$CALBRIDGE_DATABASE_URL``, overriding the file's ``database_url``)
through :func:`bridge_options`, and builds its configuration with :func:`make_config`.
Read-only commands pass ``must_exist=True`` so that a mistyped URL is an error instead
of a new, empty SQLite file.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from .._config import BridgeConfig

__all__ = [
    "bridge_options",
    "config_options",
    "make_bridge",
    "make_config",
    "open_engine",
    "open_vault",
    "run",
]

F = TypeVar("F", bound=Callable[..., Any])

#: old spellings of --database-url, still accepted (hidden) with a warning on stderr
_LEGACY_URL_OPTIONS = {"legacy_store": "--store", "legacy_url": "--url"}


def config_options(fn: F) -> F:
    """Add ``--config`` (``$CALBRIDGE_CONFIG``) to a command."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="CALBRIDGE_CONFIG",
        default=None,
        help="A calbridge TOML config file (or $CALBRIDGE_CONFIG).",
    )(fn)


def _warn_legacy(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        click.echo(
            f"warning: {param.opts[0]} is deprecated and will be removed; use --database-url",
            err=True,
        )
    return value


def bridge_options(fn: F) -> F:
    """Add ``--config`` and ``--database-url`` (plus the hidden, deprecated ``--store``
    and ``--url`` spellings) to a command."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        legacy = [
            (opt, kwargs.pop(name)) for name, opt in _LEGACY_URL_OPTIONS.items() if name in kwargs
        ]
        given = [(opt, value) for opt, value in legacy if value is not None]
        if given:
            ctx = click.get_current_context()
            explicit = ctx.get_parameter_source("database_url") == ParameterSource.COMMANDLINE
            if explicit or len(given) > 1:
                names = ", ".join(["--database-url"] * explicit + [opt for opt, _ in given])
                raise click.UsageError(f"give the database URL once (got {names})")
            kwargs["database_url"] = given[0][1]
        return fn(*args, **kwargs)

    command = cast(F, wrapper)
    for name, opt in _LEGACY_URL_OPTIONS.items():
        command = click.option(
            opt, name, metavar="URL", default=None, hidden=True, callback=_warn_legacy
        )(command)
    command = click.option(
        "--database-url",
        envvar="CALBRIDGE_DATABASE_URL",
        default=None,
        metavar="URL",
        help="Store URL (sqlite:///path or postgresql+psycopg://...); overrides the config "
        "file's database_url. Default: $CALBRIDGE_DATABASE_URL, else ./calbridge.db.",
    )(command)
    return config_options(command)


def make_config(
    config_path: str | None, database_url: str | None, *, must_exist: bool = False
) -> BridgeConfig:
    """The configuration the options ask for.

    ``must_exist``: the store must already exist (a SQLite file that does not is a
    :class:`~calbridge.errors.StoreError`, never created).
    """
    config = BridgeConfig.from_file(config_path) if config_path else BridgeConfig.from_env()
    if database_url:
        import attrs

        config = attrs.evolve(config, database_url=database_url)
    if must_exist:
        from ..store._engine import require_existing

        require_existing(config.database_url)
    return config


def make_bridge(
    config_path: str | None, database_url: str | None, *, must_exist: bool = False
) -> Any:
    """A :class:`calbridge.CalBridge` for the options (see :func:`make_config`)."""
    from .._manager import get_plugin_host
    from ..bridge import CalBridge

    config = make_config(config_path, database_url)
    host = get_plugin_host().load()
    config.check_providers(host.provider_names())  # a misspelt name first: it is the cause
    if must_exist:
        from ..store._engine import require_existing

        require_existing(config.database_url)
    return CalBridge(config, host=host)


def open_engine(
    config: BridgeConfig, *, must_exist: bool = False, upgrade: bool | None = None
) -> Any:
    """The store's engine for ``config`` (an SQLAlchemy ``Engine``; dispose it)."""
    from ..store import create_engine

    return create_engine(config.database_url, must_exist=must_exist, upgrade=upgrade)


def open_vault(config: BridgeConfig) -> Any:
    """The token vault for ``config``'s keys (a ConfigurationError when none are set)."""
    from ..store.vault import KeyRing, Vault

    return Vault(KeyRing.parse(config.keys.reveal() if config.keys else ""))


T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async CLI body."""

    async def main() -> T:
        return await factory()

    return asyncio.run(main())
