"""The ``calbridge`` command group (needs the ``cli`` extra: click and rich).

Sub-commands live in their own modules and load lazily (so ``calbridge --help`` is fast
and one broken command cannot break the others). Add a command by adding a line to
``COMMANDS``: name -> ``"module:attribute"`` of a click command or group.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["COMMANDS", "EXTRAS", "main", "missing_extra"]

COMMANDS: dict[str, str] = {
    "accounts": "calbridge.cli._route:accounts",
    "channels": "calbridge.cli._channels:channels",
    "console": "calbridge.cli._console:console",
    "db": "calbridge.cli._db:db",
    "demo": "calbridge.cli._demo:demo",
    "jobs": "calbridge.cli._worker:jobs",
    "keys": "calbridge.cli._keys:keys",
    "migrate": "calbridge.cli._migrate:migrate",
    "providers": "calbridge.cli._providers:providers",
    "route": "calbridge.cli._route:route",
    "sandbox": "calbridge.cli._sandbox:sandbox",
    "serve": "calbridge.cli._serve:serve",
    "worker": "calbridge.cli._worker:worker",
}


#: module -> the extra that installs it, for a friendly error when it is missing
EXTRAS: dict[str, str] = {
    "click": "cli",
    "rich": "cli",
    "starlette": "server",
    "uvicorn": "server",
    "psycopg": "postgres",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The message for an optional dependency that is not installed (None: not one)."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    return f'{top} is not installed: install "calbridge[{extra}]"'


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command: Any = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            message = missing_extra(exc)
            if message is None:
                raise
            raise click.ClickException(f"calbridge {cmd_name}: {message}") from None
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import CalbridgeError

        try:
            return super().invoke(ctx)
        except CalbridgeError as exc:
            raise click.ClickException(str(exc)) from None
        except ModuleNotFoundError as exc:
            message = missing_extra(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="calbridge")
def main() -> None:
    """calbridge: one calendar API over many providers, routed per user."""
