"""``calbridge route`` and ``calbridge accounts``: who is served by which provider, and why."""

from __future__ import annotations

import click

from ._context import bridge_options, make_bridge, run
from ._output import console, print_json, print_table


@click.command()
@click.argument("user")
@click.option("--explain", is_flag=True, help="Show every step of the decision.")
@click.option(
    "--pin", "pin_to", default=None, metavar="PROVIDER", help="Pin the user to PROVIDER (audited)."
)
@click.option("--unpin", is_flag=True, help="Remove the user's pin.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@bridge_options
def route(
    user: str,
    explain: bool,
    pin_to: str | None,
    unpin: bool,
    as_json: bool,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Show which provider serves USER now (and why, with --explain).

    Read-only without --pin/--unpin: nothing is written, not even the route-change audit
    entry a served request would record. A pin is refused (and nothing written) when the
    user has no active account with that provider.
    """
    if pin_to and unpin:
        raise click.UsageError("--pin and --unpin contradict each other; give one")
    writing = bool(pin_to or unpin)

    async def body() -> None:
        # read-only unless pinning: never create a database just to say "no such user"
        bridge = make_bridge(config_path, database_url, must_exist=not writing)
        try:
            if writing:
                await bridge.pin(user, None if unpin else pin_to)
            decision = await bridge.runtime.router.aexplain(user, record=writing)
        finally:
            await bridge.aclose()
        if as_json:
            print_json(decision.as_dict())
        elif explain:
            console.print(decision.explain())
        else:
            console.print(f"{user} -> {decision.provider} ({decision.source})")

    run(body)


@click.command()
@click.option("--user", default=None, help="Only this app user's accounts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@bridge_options
def accounts(
    user: str | None, as_json: bool, config_path: str | None, database_url: str | None
) -> None:
    """List connected accounts, their provider, status and the user's migration phase."""

    async def body() -> None:
        bridge = make_bridge(config_path, database_url, must_exist=True)
        try:
            found = await bridge.accounts(user)
            phases = {
                user_id: (await bridge.runtime.auser_facts(user_id)).phase
                for user_id in {a.app_user_id for a in found}
            }
        finally:
            await bridge.aclose()
        rows = [
            {
                "id": a.id,
                "app_user_id": a.app_user_id,
                "provider": a.provider,
                "provider_account_id": a.provider_account_id,
                "email": a.email,
                "status": str(a.status),
                "phase": str(phases[a.app_user_id]) if phases[a.app_user_id] else "legacy",
            }
            for a in found
        ]
        if as_json:
            print_json(rows)
            return
        print_table(
            "accounts",
            ["user", "provider", "status", "phase", "email", "id"],
            [
                (
                    r["app_user_id"],
                    r["provider"],
                    r["status"],
                    r["phase"],
                    r["email"] or "",
                    r["id"],
                )
                for r in rows
            ],
        )

    run(body)
