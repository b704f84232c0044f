"""``calbridge channels``: every push channel (and polled account) with its health."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import click

from ._context import bridge_options, make_config, open_engine, open_vault
from ._output import print_json, print_table

if TYPE_CHECKING:
    from ..store import Store


def _iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def channel_rows(store: Store) -> list[dict[str, Any]]:
    """The channels as secret-free dictionaries (what ``--json`` prints)."""
    rows = []
    for rec in store.channels.list_channels():
        ch = rec.channel
        rows.append(
            {
                "provider": ch.provider,
                "channel_id": ch.id,
                "account_id": ch.account_id,
                "calendar_ids": list(ch.calendar_ids),
                "state": rec.health,
                "reason": rec.health_reason,
                "failures": rec.failures,
                "last_notification": _iso(rec.last_notification_at),
                "expires": _iso(ch.expires_at),
                "callback_url": ch.callback_url or None,
            }
        )
    return rows


@click.command()
@bridge_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def channels(*, config_path: str | None, database_url: str | None, as_json: bool) -> None:
    """List change channels: state, last notification and expiry.

    States: pending (being created), active (pushing), renewing, failing (renewal failed
    or silent while reconciliation found changes; polled meanwhile), closed (expired or
    closed by the provider; polled), polling (the account is polled, ``poll:<account>``).
    """
    from ..store import Store

    config = make_config(config_path, database_url, must_exist=True)
    engine = open_engine(config, must_exist=True)
    try:
        vault = open_vault(config) if config.keys is not None else None
        rows = channel_rows(Store(engine, vault))
    finally:
        engine.dispose()
    if as_json:
        print_json(rows)
        return
    print_table(
        "calbridge channels",
        ["provider", "channel", "account", "calendars", "state", "last notification", "expires"],
        [
            (
                r["provider"],
                r["channel_id"],
                r["account_id"],
                ", ".join(r["calendar_ids"]),
                r["state"] + (f" ({r['reason']})" if r["reason"] else ""),
                r["last_notification"] or "-",
                r["expires"] or "-",
            )
            for r in rows
        ],
    )
