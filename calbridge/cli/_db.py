"""``calbridge db``: create or migrate the state store."""

from __future__ import annotations

import click

from ..store import Engine, engine_url
from ._context import bridge_options, make_config
from ._output import print_json


@click.group()
def db() -> None:
    """Create, migrate and inspect the state store."""


@db.command()
@bridge_options
@click.option("--revision", default="heads", show_default=True, help="Target revision.")
def upgrade(*, config_path: str | None, database_url: str | None, revision: str) -> None:
    """Migrate the database to the newest schema (safe to run from several hosts at once).

    Embedded SQLite files are also upgraded automatically when calbridge opens them;
    run this as a deploy step for PostgreSQL.
    """
    from calbridge.store import current_revisions
    from calbridge.store import upgrade as run_upgrade

    engine = _engine(config_path, database_url, must_exist=False)
    try:
        before = current_revisions(engine)
        run_upgrade(engine, revision)
        after = current_revisions(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"already at {', '.join(sorted(after)) or 'base'}")
    else:
        old = ", ".join(sorted(before)) or "empty database"
        click.echo(f"upgraded {old} -> {', '.join(sorted(after))}")


@db.command()
@bridge_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(*, config_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Show the database's schema revision and whether it is up to date.

    Read-only: a SQLite file that does not exist is an error (nothing is created).
    """
    from calbridge.store import current_revisions, head_revisions

    engine = _engine(config_path, database_url, must_exist=True)
    try:
        current = sorted(current_revisions(engine))
    finally:
        engine.dispose()
    heads = sorted(head_revisions())
    data = {
        "url": engine_url(engine),
        "current": current,
        "heads": heads,
        "up_to_date": current == heads,
    }
    if as_json:
        print_json(data)
        return
    click.echo(f"database: {data['url']}")
    click.echo(f"current:  {', '.join(current) or '(empty)'}")
    click.echo(f"newest:   {', '.join(heads)}")
    if current != heads:
        click.echo("run `calbridge db upgrade` to migrate")


def _engine(config_path: str | None, database_url: str | None, *, must_exist: bool) -> Engine:
    from calbridge.errors import CalbridgeError
    from calbridge.store import create_engine

    try:
        config = make_config(config_path, database_url, must_exist=must_exist)
        return create_engine(config.database_url, upgrade=False, must_exist=must_exist)
    except CalbridgeError as exc:
        raise click.ClickException(str(exc)) from None
