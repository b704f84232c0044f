"""``calbridge db``: create or migrate the state store."""

from __future__ import annotations

import click
import sqlalchemy as sa

from ._output import print_json

_URL_HELP = (
    "Database URL: sqlite:///path or postgresql+psycopg://user@host/db "
    "(default: $CALBRIDGE_DATABASE_URL, else sqlite:///./calbridge.db)."
)


@click.group()
def db() -> None:
    """Create, migrate and inspect the state store."""


@db.command()
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--revision", default="heads", show_default=True, help="Target revision.")
def upgrade(url: str | None, revision: str) -> None:
    """Migrate the database to the newest schema (safe to run from several hosts at once).

    Embedded SQLite files are also upgraded automatically when calbridge opens them;
    run this as a deploy step for PostgreSQL.
    """
    from calbridge.store import current_revisions
    from calbridge.store import upgrade as run_upgrade

    engine = _engine(url)
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
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(url: str | None, as_json: bool) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from calbridge.store import current_revisions, head_revisions, resolve_url

    engine = _engine(url)
    try:
        current = sorted(current_revisions(engine))
    finally:
        engine.dispose()
    heads = sorted(head_revisions())
    data = {
        "url": _redact(resolve_url(url)),
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


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(invalid URL)"


def _engine(url: str | None) -> sa.Engine:
    from calbridge.errors import CalbridgeError
    from calbridge.store import create_engine

    try:
        return create_engine(url, upgrade=False)
    except CalbridgeError as exc:
        raise click.ClickException(str(exc)) from None
