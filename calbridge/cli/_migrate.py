"""``calbridge migrate``: move users from their legacy provider to Cronofy, and back."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import Progress

from ..router import Phase
from ..store import offload
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
    fn = click.option(
        "--jsonl",
        "as_jsonl",
        is_flag=True,
        help="Print one JSON object per user, on its own line, as each user finishes.",
    )(fn)
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document at the end."
    )(fn)
    return bridge_options(fn)


def _rate_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--max-wait",
        type=click.FloatRange(0),
        default=60.0,
        show_default=True,
        help="The longest Retry-After (seconds) waited out for one user after a 429; a "
        "longer one records the user as rate_limited and goes on.",
    )(fn)
    return click.option(
        "--retries",
        type=click.IntRange(0),
        default=2,
        show_default=True,
        help="Times one user is tried again after waiting out a 429's Retry-After.",
    )(fn)


def _emit(entry: dict[str, Any]) -> None:
    """One JSON Lines record on stdout, flushed at once (consumers read it as it comes)."""
    sys.stdout.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def _progress(label: str, total: int, *, quiet: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (none with ``quiet`` or when stdout is not a TTY);
    yields the function advancing it by one user. Lines printed through ``console``
    meanwhile appear above the bar."""
    if quiet or not console.is_terminal:
        yield lambda: None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"{label} ({total} users)", total=total)
        yield lambda: bar.advance(task)


def _mode(as_json: bool, as_jsonl: bool) -> None:
    if as_json and as_jsonl:
        raise click.UsageError("--json and --jsonl exclude each other")


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
    as_jsonl: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Show each selected user's readiness; users not yet re-authorised wait on legacy.

    Reads the store only (no provider call). --jsonl: one object per user as it is read.
    """
    _mode(as_json, as_jsonl)

    async def body() -> None:
        bridge = make_bridge(config_path, database_url, must_exist=True)
        data = []
        try:
            migrator = _migrator(bridge)
            selected = _users(bridge, users, users_file, percent, tenant)
            with _progress("plan", len(selected), quiet=as_json or as_jsonl) as advance:
                for user in selected:
                    r = migrator.plan([user])[0]
                    row = {
                        "app_user_id": r.app_user_id,
                        "phase": str(r.phase),
                        "readiness": r.readiness,
                        "detail": r.detail,
                        "under_migration": r.under_migration,
                    }
                    if as_jsonl:
                        _emit(row)
                    data.append(row)
                    advance()
        finally:
            await bridge.aclose()
        if as_jsonl:
            return
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
    as_jsonl: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Show each selected user's phase, accounts and last parity result."""
    _mode(as_json, as_jsonl)

    async def body() -> None:
        bridge = make_bridge(config_path, database_url, must_exist=True)
        try:
            migrator = _migrator(bridge)
            data = []
            for u in _users(bridge, users, users_file, percent, tenant):
                data.append((await offload(migrator.status, u)).as_dict())
                if as_jsonl:
                    _emit(data[-1])
        finally:
            await bridge.aclose()
        if as_jsonl:
            return
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
@_rate_options
@click.option("--calendar", default="primary", show_default=True, help="The calendar to compare.")
@click.option(
    "--skip-checked-since",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="Skip users compared within the last SECONDS (their routing row's last_parity): "
    "rerun an interrupted or throttled diff with it to compare only the rest.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Users compared at once (their provider reads share the application's rate budget).",
)
def diff(
    as_json: bool,
    as_jsonl: bool,
    users: tuple[str, ...],
    users_file: str | None,
    percent: float | None,
    tenant: str | None,
    retries: int,
    max_wait: float,
    calendar: str,
    skip_checked_since: float | None,
    concurrency: int,
    config_path: str | None,
    database_url: str | None,
) -> None:
    """Compare the legacy and Cronofy views field by field (missing / extra / different).

    Each user's result is printed as soon as that user is compared, --concurrency users
    at a time (--jsonl: one JSON object per line; --json: one list at the end). A user
    whose provider answers 429 (after waiting out a Retry-After of at most --max-wait,
    --retries times) or fails is reported with status rate_limited or error, and the
    others go on. Exit status 3 when any user is rate_limited or error: rerun with
    --skip-checked-since.
    """
    _mode(as_json, as_jsonl)

    async def body() -> list[dict[str, Any]]:
        bridge = make_bridge(config_path, database_url, must_exist=True)
        out: list[dict[str, Any]] = []
        try:
            migrator = _migrator(bridge)
            selected = _users(bridge, users, users_file, percent, tenant)
            with _progress("diff", len(selected), quiet=as_json or as_jsonl) as advance:
                async for result in migrator.check_parity_many(
                    selected,
                    calendar=calendar,
                    skip_checked_since=skip_checked_since,
                    retries=retries,
                    max_wait=max_wait,
                    concurrency=concurrency,
                ):
                    item = result.as_dict()
                    out.append(item)
                    if as_jsonl:
                        _emit(item)
                    elif not as_json:
                        _print_parity(item)
                    advance()
        finally:
            await bridge.aclose()
        return out

    out = run(body)
    if as_json:
        print_json(out)
    elif not as_jsonl:
        counts: dict[str, int] = {}
        for item in out:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        console.print(
            "diff: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f" of {len(out)}"
        )
    if any(item["status"] in ("rate_limited", "error") for item in out):
        raise SystemExit(3)


def _print_parity(item: dict[str, Any]) -> None:
    user = escape(item["app_user_id"])
    status = item["status"]
    if status == "skipped":
        last = item.get("last_parity") or {}
        console.print(f"{user}: skipped (compared at {last.get('at')})")
        return
    if status in ("rate_limited", "error"):
        console.print(f"{user}: [yellow]{status}[/]: {escape(str(item.get('error')))}")
        return
    state = "[green]clean[/]" if item["clean"] else "[red]differs[/]"
    console.print(f"{user}: {state} ({item['compared']} occurrences, {item['pending']} pending)")
    for key in item["missing"]:
        console.print(f"  missing at target: {key[0]} @ {key[1]}")
    for key in item["extra"]:
        console.print(f"  extra at target:   {key[0]} @ {key[1]}")
    for d in item["different"]:
        console.print(
            f"  {d['ical_uid']} @ {d['occurrence']}: {d['field']}: "
            f"{d['legacy']!r} != {d['target']!r}"
        )


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
    @migrate.command(name=name, help=help_text + _STREAM_HELP)
    @_selection
    @_rate_options
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
        as_jsonl: bool,
        users: tuple[str, ...],
        users_file: str | None,
        percent: float | None,
        tenant: str | None,
        retries: int,
        max_wait: float,
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
        _mode(as_json, as_jsonl)

        async def body() -> Any:
            bridge = make_bridge(config_path, database_url)
            try:
                selected = _users(bridge, users, users_file, percent, tenant)
                migrator = _migrator(bridge)
                with _progress(name, len(selected), quiet=as_json or as_jsonl) as advance:
                    return await migrator.bulk(
                        selected,
                        to,
                        dry_run=dry_run,
                        force=skip,
                        progress=lambda _u, _o: advance(),
                        report=_user_line(as_json=as_json, as_jsonl=as_jsonl),
                        retries=retries,
                        max_wait=max_wait,
                    )
            finally:
                await bridge.aclose()

        _report(name, run(body), as_json=as_json, as_jsonl=as_jsonl, dry_run=dry_run)


_STREAM_HELP = (
    "\n\nEach user's outcome (moved, already, refused, conflict, rate_limited, error) is "
    "printed as that user finishes (--jsonl: one JSON object per line, {user, outcome, "
    "reason, guards, forced, held}; --json: one document at the end). A refused step "
    "writes nothing, except that a refused `start` holds the user on legacy under "
    "migration (said as held). A user whose provider "
    "answers 429 (after waiting out a Retry-After of at most --max-wait, --retries times) "
    "or fails is refused as rate_limited or error and the run goes on. Steps are "
    "idempotent: rerun the same command to resume (users already moved are `already`, "
    "without a provider call)."
)


def _user_line(*, as_json: bool, as_jsonl: bool) -> Callable[[dict[str, Any]], None] | None:
    """How a bulk step reports each user as it finishes."""
    if as_json:
        return None
    if as_jsonl:
        return _emit

    def show(entry: dict[str, Any]) -> None:
        outcome = entry["outcome"]
        color = {"moved": "green", "already": "dim"}.get(outcome, "yellow")
        line = f"  {escape(entry['user'])}: [{color}]{outcome}[/]"
        if entry["reason"]:
            line += f": {escape(entry['reason'])}"
        if entry["guards"]:
            line += " (guards: " + ", ".join(g["kind"] for g in entry["guards"]) + ")"
        if entry["forced"]:
            line += " [red]forced past " + ", ".join(g["kind"] for g in entry["forced"]) + "[/]"
        if entry.get("held"):
            line += "; held on legacy, now under migration"
        console.print(line)

    return show


def _report(
    name: str, result: Any, *, as_json: bool, dry_run: bool, as_jsonl: bool = False
) -> None:
    """Print a BulkResult's summary (each user was printed as it finished, except with
    --json: the whole document now); exit status 3 when a user was refused (not on a dry
    run; a rate_limited or error user counts as refused)."""
    if as_json:
        print_json(result.as_dict())
    elif not as_jsonl:
        verb = "would move" if dry_run else "moved"
        line = (
            f"{name}: {verb} {len(result.moved)}, already {len(result.already)}, "
            f"refused {len(result.refused)}"
        )
        if result.rate_limited or result.errors:
            line += (
                f" (rate_limited {len(result.rate_limited)}, error {len(result.errors)}:"
                " rerun to resume)"
            )
        console.print(line)
    if result.refused and not dry_run:
        raise SystemExit(3)


@migrate.command()
@_selection
@click.option("--dry-run", is_flag=True, help="Show who would be enrolled; change nothing.")
def enroll(
    as_json: bool,
    as_jsonl: bool,
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
    _mode(as_json, as_jsonl)

    async def body() -> Any:
        bridge = make_bridge(config_path, database_url)
        try:
            selected = _users(bridge, users, users_file, percent, tenant)
            with _progress("enroll", len(selected), quiet=as_json or as_jsonl) as advance:
                return await _migrator(bridge).enroll_many(
                    selected,
                    dry_run=dry_run,
                    progress=lambda _u, _o: advance(),
                    report=_user_line(as_json=as_json, as_jsonl=as_jsonl),
                )
        finally:
            await bridge.aclose()

    _report("enroll", run(body), as_json=as_json, as_jsonl=as_jsonl, dry_run=dry_run)


_transition(
    "start",
    Phase.SHADOW,
    "legacy -> shadow: reads replayed against Cronofy and compared.\n\n"
    "Users refused (e.g. not yet re-authorised through Cronofy) are put under migration "
    "at legacy (reported as held; nothing else is written): they stay on legacy after "
    "authorising Cronofy until a later start moves them.",
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
    "message}], conflict, held}], forced: {user: [{kind, message}]}}; conflict: another run "
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
