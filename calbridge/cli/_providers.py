"""``calbridge providers``: what is loaded and from where."""

from __future__ import annotations

import click

from .._manager import PluginHost
from ._context import config_options
from ._output import print_json, print_table


@click.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def providers(*, config_path: str | None, as_json: bool) -> None:
    """List every loaded provider, where it came from and its capabilities.

    Plugins that failed to load are reported on stderr and skipped. With a configuration
    (--config / $CALBRIDGE_CONFIG), its provider names are checked against the loaded
    providers: a name that matches none is an error naming the nearest.
    """
    host = PluginHost().load()
    if config_path:
        from .._config import BridgeConfig

        BridgeConfig.from_file(config_path).check_providers(host.provider_names())
    for name, reason in sorted(host.failures.items()):
        click.echo(f"warning: plugin {name!r} failed to load and was skipped: {reason}", err=True)
    infos = sorted(host.providers().values(), key=lambda i: i.name)
    if as_json:
        print_json(
            [
                {
                    "name": i.name,
                    "source": i.source,
                    "plugin": i.plugin,
                    "aliases": list(i.aliases),
                    "capabilities": i.cls.capabilities.as_dict(),
                }
                for i in infos
            ]
        )
        return
    print_table(
        "calbridge providers",
        ["name", "source", "capabilities"],
        [
            (
                i.name,
                i.source,
                ", ".join(k for k, v in i.cls.capabilities.as_dict().items() if v),
            )
            for i in infos
        ],
    )
