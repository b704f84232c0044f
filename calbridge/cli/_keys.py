"""``calbridge keys``: token-vault keys: generate, rotate, check.

``rotate`` and ``check`` use the deployment's configuration (``--config`` /
``$CALBRIDGE_CONFIG``, ``--database-url``, ``$CALBRIDGE_KEYS``) and refuse a SQLite file
that does not exist: rotating an empty new database would report "0 remaining" about
the wrong one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from calbridge.errors import CalbridgeError

from ._context import bridge_options, make_config, open_engine, open_vault
from ._output import print_json

if TYPE_CHECKING:
    from calbridge.store import Store


@click.group()
def keys() -> None:
    """Manage the token vault's encryption keys (CALBRIDGE_KEYS)."""


@keys.command()
@click.option("--kid", default=None, help="Key id (default: k<YYYYMMDD>-<random>, unique per key).")
def generate(kid: str | None) -> None:
    """Print a new key entry ``kid:base64key``.

    Put it FIRST in CALBRIDGE_KEYS (keeping the old keys after it), restart, then run
    ``calbridge keys rotate``. The key is printed once; store it in your secret manager.
    """
    from calbridge.store import generate_key
    from calbridge.store.vault import check_key_id, new_key_id

    try:
        kid = check_key_id(kid) if kid is not None else new_key_id()
    except CalbridgeError as exc:
        raise click.BadParameter(str(exc), param_hint="--kid") from None
    click.echo(f"{kid}:{generate_key()}")


@keys.command()
@bridge_options
@click.option("--batch-size", default=100, show_default=True, help="Rows per transaction.")
@click.option("--max-batches", default=None, type=int, help="Stop after this many batches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rotate(
    *,
    config_path: str | None,
    database_url: str | None,
    batch_size: int,
    max_batches: int | None,
    as_json: bool,
) -> None:
    """Re-encrypt every stored secret with the current (first) key.

    Restartable: interrupt it at any time and run it again. When it reports 0 remaining,
    the old keys can be removed from CALBRIDGE_KEYS.
    """
    with _store(config_path, database_url) as store:
        try:
            report = store.keys.rotate_keys(batch_size=batch_size, max_batches=max_batches)
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
@bridge_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(*, config_path: str | None, database_url: str | None, as_json: bool) -> None:
    """Count secrets not yet under the current key (exit status 1 when any remain)."""
    with _store(config_path, database_url) as store:
        remaining = store.keys.count_unrotated()
        kid = store.vault.current_key_id
    if as_json:
        print_json({"remaining": remaining, "current_key_id": kid})
    else:
        click.echo(f"{remaining} row(s) not under the current key {kid!r}")
    if remaining:
        raise SystemExit(1)


@contextmanager
def _store(config_path: str | None, database_url: str | None) -> Iterator[Store]:
    """The configured store with its vault; no keys or no database is an error."""
    from calbridge.store import Store

    try:
        config = make_config(config_path, database_url)
        vault = open_vault(config)  # no keys is the first thing to fix
        engine = open_engine(config, must_exist=True)
    except CalbridgeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield Store(engine, vault)
    finally:
        engine.dispose()
