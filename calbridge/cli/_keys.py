"""``calbridge keys``: token-vault keys: generate, rotate, check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from calbridge.errors import CalbridgeError

from ._output import print_json

if TYPE_CHECKING:
    from calbridge.store import Store

_URL_HELP = "Database URL (default: $CALBRIDGE_DATABASE_URL, else sqlite:///./calbridge.db)."


@click.group()
def keys() -> None:
    """Manage the token vault's encryption keys (CALBRIDGE_KEYS)."""


@keys.command()
@click.option("--kid", default=None, help="Key id (default: k<YYYYMMDD>).")
def generate(kid: str | None) -> None:
    """Print a new key entry ``kid:base64key``.

    Put it FIRST in CALBRIDGE_KEYS (keeping the old keys after it), restart, then run
    ``calbridge keys rotate``. The key is printed once; store it in your secret manager.
    """
    import datetime as dt

    from calbridge.store import generate_key

    kid = kid or f"k{dt.datetime.now(dt.UTC):%Y%m%d}"
    click.echo(f"{kid}:{generate_key()}")


@keys.command()
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--batch-size", default=100, show_default=True, help="Rows per transaction.")
@click.option("--max-batches", default=None, type=int, help="Stop after this many batches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate(url: str | None, batch_size: int, max_batches: int | None, as_json: bool) -> None:
    """Re-encrypt every stored secret with the current (first) key.

    Restartable: interrupt it at any time and run it again. When it reports 0 remaining,
    the old keys can be removed from CALBRIDGE_KEYS.
    """
    with _store(url) as store:
        try:
            report = store.rotate_keys(batch_size=batch_size, max_batches=max_batches)
        except CalbridgeError as exc:
            raise click.ClickException(str(exc)) from None
    data = {
        "rotated": report.rotated,
        "remaining": report.remaining,
        "current_key_id": report.current_key_id,
    }
    if as_json:
        print_json(data)
        return
    click.echo(
        f"re-encrypted {report.rotated} row(s) with key {report.current_key_id!r}; "
        f"{report.remaining} remaining"
    )
    if report.remaining == 0:
        click.echo("every secret uses the current key: older keys may be removed")


@keys.command()
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(url: str | None, as_json: bool) -> None:
    """Count secrets not yet under the current key (exit status 1 when any remain)."""
    with _store(url) as store:
        remaining = store.count_unrotated()
        kid = store.vault.current_key_id
    if as_json:
        print_json({"remaining": remaining, "current_key_id": kid})
    else:
        click.echo(f"{remaining} row(s) not under the current key {kid!r}")
    if remaining:
        raise SystemExit(1)


@contextmanager
def _store(url: str | None) -> Iterator[Store]:
    from calbridge.store import Store, Vault, create_engine

    try:
        vault = Vault.from_env()
        engine = create_engine(url)
    except CalbridgeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield Store(engine, vault)
    finally:
        engine.dispose()
