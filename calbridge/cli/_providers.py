"""``calbridge providers``: what is loaded and from where."""

from __future__ import annotations

import click

from .._manager import PluginHost
from ._output import print_json, print_table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def providers(as_json: bool) -> None:
    """List every loaded provider, where it came from and its capabilities.

    Plugins that failed to load are reported on stderr and skipped.
    """
    host = PluginHost().load()
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
