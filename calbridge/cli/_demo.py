"""``calbridge demo``: the end-to-end migration story on the local sandboxes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ._output import print_json


@click.command()
@click.option("--fast", is_flag=True, help="A small, quick run (what the test suite runs).")
@click.option(
    "--google-users",
    type=click.IntRange(1, 500),
    default=None,
    help="Google-native users (default 12).",
)
@click.option(
    "--outlook-users",
    type=click.IntRange(0, 500),
    default=None,
    help="Microsoft-native users (default 4).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the SQLite store here (default: a temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
def demo(
    fast: bool,
    google_users: int | None,
    outlook_users: int | None,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Migrate sandbox users from Google and Outlook to Cronofy, end to end, offline.

    Sandboxes, webhook receiver and workers run on loopback; state is an embedded SQLite
    store. Users connect their legacy provider, a background writer changes calendars,
    most users re-authorise through Cronofy, the cohort goes shadow -> dual -> cutover ->
    retired, one user is rolled back, and the summary checks that nothing was lost.
    Exits non-zero when a change was lost or delivered twice.

    Self-contained: it takes no --config and never reads the deployment's configuration
    or store ($CALBRIDGE_CONFIG, $CALBRIDGE_DATABASE_URL, $CALBRIDGE_KEYS are ignored),
    so running it on a production host cannot touch production state.
    """
    import attrs

    from ..demo import DemoOptions, run_demo

    options = DemoOptions.fast() if fast else DemoOptions()
    options = attrs.evolve(options, quiet=as_json)
    if google_users is not None:
        options = attrs.evolve(options, google_users=google_users)
    if outlook_users is not None:
        options = attrs.evolve(options, outlook_users=outlook_users)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        options = attrs.evolve(options, workdir=workdir)
    summary = asyncio.run(run_demo(options))
    if as_json:
        print_json(summary.as_dict())
    if not summary.ok:
        raise SystemExit(1)
