"""The ``calbridge`` command.

Sub-commands live in their own modules and load lazily (so ``calbridge --help`` is fast
and one broken command cannot break the others). Add a command by adding a line to
``COMMANDS``: name -> ``"module:attribute"`` of a click command or group.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "accounts": "calbridge.cli._route:accounts",
    "channels": "calbridge.cli._channels:channels",
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


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command: Any = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        from ..errors import CalbridgeError

        try:
            return super().invoke(ctx)
        except CalbridgeError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="calbridge")
def main() -> None:
    """calbridge: one calendar API over many providers, routed per user."""
