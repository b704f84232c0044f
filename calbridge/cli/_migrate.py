"""``calbridge migrate``: move users from their legacy provider to Cronofy, and back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from ..router import Phase
from ._context import bridge_options, make_bridge, run
from ._output import console, print_json, print_table


def _selection(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--tenant", default=None, help="Only users of this tenant.")(fn)
    fn = click.option(
        "--percent",
        type=click.FloatRange(0, 100),
        default=None,
        help="A deterministic, sticky percentage of users.",
    )(fn)
    fn = click.option(
        "--users-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="A file with one app user id per line.",
    )(fn)
    fn = click.option("--user", "users", multiple=True, help="An app user id (repeatable).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
    return bridge_options(fn)


def _users(
    bridge: Any,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
) -> list[str]:
    explicit: list[str] | None = list(users) or None
    if users_file:
        explicit = (explicit or []) + [
            line.strip()
            for line in Path(users_file).read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
    migrator = _migrator(bridge)
    chosen: list[str] = migrator.cohort(users=explicit, percent=percent, tenant=tenant)
    return chosen


def _migrator(bridge: Any) -> Any:
    from ..migration import Migrator

    return Migrator(bridge.runtime)


@click.group()
def migrate() -> None:
    """Move users from their legacy provider to Cronofy step by step (with rollback).

    Phases: legacy -> shadow -> dual -> cutover -> retired; rollback from any phase.
    Select users with --user (repeatable), --users-file, --percent and/or --tenant;
    with no selection every user holding a legacy account is selected.

    Each step checks its guards and writes the new phase only if the user's routing row
    is unchanged since: concurrent runs move a user once; a run that lost reports the
    user under `already` (moved where it wanted) or refused with `conflict`.

    A user is under migration once a migrate step has touched them (enroll, start,
    rollback): their phase then routes them, and the routing policy rules (e.g.
    prefer-when-authorized) no longer apply to them.
    """


@migrate.command()
@_selection
def plan(
    as_json: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Show each selected user's readiness; users not yet re-authorised wait on legacy."""

    async def body() -> None:
        bridge = make_bridge(config_path, database_url)
        try:
            rows = _migrator(bridge).plan(_users(bridge, users, users_file, percent, tenant))
        finally:
            await bridge.aclose()
        data = [
            {
                "app_user_id": r.app_user_id,
                "phase": str(r.phase),
                "readiness": r.readiness,
                "detail": r.detail,
                "under_migration": r.under_migration,
            }
            for r in rows
        ]
        if as_json:
            print_json(data)
            return
        print_table(
            "migration plan",
            ["user", "phase", "readiness", "detail"],
            [(d["app_user_id"], d["phase"], d["readiness"], d["detail"]) for d in data],
        )

    run(body)


@migrate.command()
@_selection
def status(
    as_json: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Show each selected user's phase, accounts and last parity result."""

    async def body() -> None:
        bridge = make_bridge(config_path, database_url)
        try:
            migrator = _migrator(bridge)
            data = [
                migrator.status(u).as_dict()
                for u in _users(bridge, users, users_file, percent, tenant)
            ]
        finally:
            await bridge.aclose()
        if as_json:
            print_json(data)
            return
        print_table(
            "migration status",
            ["user", "phase", "legacy", "parity"],
            [
                (
                    d["app_user_id"],
                    d["phase"],
                    d["legacy_provider"] or "",
                    "clean"
                    if (d["last_parity"] or {}).get("clean")
                    else ("-" if d["last_parity"] is None else "differs"),
                )
                for d in data
            ],
        )

    run(body)


@migrate.command()
@_selection
@click.option("--calendar", default="primary", show_default=True, help="The calendar to compare.")
def diff(
    as_json: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    calendar: str,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Compare the legacy and Cronofy views field by field (missing / extra / different)."""

    async def body() -> None:
        bridge = make_bridge(config_path, database_url)
        out = []
        try:
            migrator = _migrator(bridge)
            for user in _users(bridge, users, users_file, percent, tenant):
                report = await migrator.check_parity(user, calendar=calendar)
                out.append({"app_user_id": user, **report.as_dict()})
        finally:
            await bridge.aclose()
        if as_json:
            print_json(out)
            return
        for item in out:
            state = "[green]clean[/]" if item["clean"] else "[red]differs[/]"
            console.print(
                f"{item['app_user_id']}: {state} ({item['compared']} occurrences, "
                f"{item['pending']} pending)"
            )
            for key in item["missing"]:
                console.print(f"  missing at target: {key[0]} @ {key[1]}")
            for key in item["extra"]:
                console.print(f"  extra at target:   {key[0]} @ {key[1]}")
            for d in item["different"]:
                console.print(
                    f"  {d['ical_uid']} @ {d['occurrence']}: {d['field']}: "
                    f"{d['legacy']!r} != {d['target']!r}"
                )

    run(body)


#: the forceable guard kinds' names (calbridge.migration.FORCEABLE; kept here so the CLI
#: starts without importing the migration; a test checks they agree)
FORCE_NAMES = ("initial-sync", "parity")
#: what a bare ``--force`` stands for: every forceable kind (calbridge.migration.BARE_FORCE)
FORCE_ALL = "all"


def _force_kinds(values: tuple[str, ...]) -> frozenset[Any]:
    from ..migration import BARE_FORCE, GuardKind

    kinds: set[Any] = set()
    for value in values:
        kinds |= BARE_FORCE if value == FORCE_ALL else {GuardKind(value)}
    return frozenset(kinds)


def _transition(name: str, to: Phase, help_text: str, *, forceable: bool = False) -> None:
    @migrate.command(name=name, help=help_text)
    @_selection
    @click.option("--dry-run", is_flag=True, help="Check guards only; change nothing.")
    @click.option(
        "--force",
        "force",
        multiple=True,
        is_flag=False,
        flag_value=FORCE_ALL,
        type=click.Choice([*FORCE_NAMES, FORCE_ALL]),
        hidden=not forceable,
        help="Skip one guard kind: parity or initial-sync (repeatable). A bare --force (or "
        "--force all) skips both. The account and phase-order guards are never skipped.",
    )
    def command(
        as_json: bool,
        users: tuple[str, ...],
        users_file: str | None,
        percent: float | None,
        tenant: str | None,
        dry_run: bool,
        force: tuple[str, ...],
        config_path: str | None,
        database_url: str | None,
    ) -> None:
        if force and not forceable:
            raise click.UsageError(
                f"--force does not apply to `migrate {name}`: no guard of it can be skipped"
            )
        skip = _force_kinds(force)

        async def body() -> Any:
            bridge = make_bridge(config_path, database_url)
            try:
                selected = _users(bridge, users, users_file, percent, tenant)
                migrator = _migrator(bridge)
                with Progress(console=console, transient=True, disable=as_json) as bar:
                    task = bar.add_task(f"{name} ({len(selected)} users)", total=len(selected))
                    return await migrator.bulk(
                        selected,
                        to,
                        dry_run=dry_run,
                        force=skip,
                        progress=lambda _u, _o: bar.advance(task),
                    )
            finally:
                await bridge.aclose()

        _report(name, run(body), as_json=as_json, dry_run=dry_run)


def _report(name: str, result: Any, *, as_json: bool, dry_run: bool) -> None:
    """Print a BulkResult; exit status 3 when a user was refused (not on a dry run)."""
    if as_json:
        print_json(result.as_dict())
    else:
        verb = "would move" if dry_run else "moved"
        console.print(
            f"{name}: {verb} {len(result.moved)}, already {len(result.already)}, "
            f"refused {len(result.refused)}"
        )
        for user, reason in result.refused:
            kinds = ", ".join(str(g.kind) for g in result.guards.get(user, ()))
            console.print(
                f"  [yellow]{user}[/]: {reason}" + (f" (guards: {kinds})" if kinds else "")
            )
        for user, skipped in result.forced.items():
            kinds = ", ".join(str(g.kind) for g in skipped)
            console.print(f"  [red]{user}[/]: forced past {kinds}")
    if result.refused and not dry_run:
        raise SystemExit(3)


@migrate.command()
@_selection
@click.option("--dry-run", is_flag=True, help="Show who would be enrolled; change nothing.")
def enroll(
    as_json: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    dry_run: bool,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Put users under migration at legacy without moving them.

    From then on their migration phase routes them, not the policy rules: they stay on
    the legacy provider even after authorising Cronofy, until `migrate start` moves them.
    Users already under migration are left where they are (`already`). `start` (even
    when refused) and `rollback` also put the users they touch under migration.
    """

    async def body() -> Any:
        bridge = make_bridge(config_path, database_url)
        try:
            selected = _users(bridge, users, users_file, percent, tenant)
            return await _migrator(bridge).enroll_many(selected, dry_run=dry_run)
        finally:
            await bridge.aclose()

    _report("enroll", run(body), as_json=as_json, dry_run=dry_run)


_transition(
    "start",
    Phase.SHADOW,
    "legacy -> shadow: reads replayed against Cronofy and compared.\n\n"
    "Users refused (e.g. not yet re-authorised through Cronofy) are put under migration "
    "at legacy: they stay on legacy after authorising Cronofy until a later start moves "
    "them.",
)
_transition(
    "dual", Phase.DUAL, "shadow -> dual: writes through legacy, verified visible through Cronofy."
)
_transition(
    "cutover",
    Phase.CUTOVER,
    "dual -> cutover: Cronofy serves; legacy kept warm.\n\n"
    "Guarded: an active Cronofy authorization (no-authorization, authorization-inactive), "
    "no skipped phase (skips-phase), Cronofy's initial sync of the user complete "
    "(initial-sync: its profile_initial_sync_completed notification arrived, or userinfo "
    "no longer reports profile_initial_sync_required) and parity clean for the clean "
    "period (parity). --force parity / --force initial-sync skip exactly those.\n\n"
    "--json: {to, dry_run, moved, already, refused: [{user, reason, guards: [{kind, "
    "message}], conflict}], forced: {user: [{kind, message}]}}; conflict: another run "
    "moved the user after this one checked the guards (this run wrote nothing). Exit "
    "status 3 when any user is refused (not with --dry-run).",
    forceable=True,
)
_transition(
    "retire", Phase.RETIRED, "cutover -> retired: stop legacy channels and revoke legacy tokens."
)
_transition(
    "rollback",
    Phase.LEGACY,
    "Any phase -> legacy. A user not under migration is put under it at legacy.",
)
