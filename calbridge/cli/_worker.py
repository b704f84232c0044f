"""``calbridge worker`` (run jobs until SIGTERM) and ``calbridge jobs`` (queue statistics)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from ..errors import CalbridgeError, ConfigurationError
from ._context import bridge_options, make_config, open_engine
from ._output import print_json, print_table

if TYPE_CHECKING:
    from ..jobs import Worker


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command()
@bridge_options
@click.option("--concurrency", "-c", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option(
    "--queues",
    "-q",
    multiple=True,
    metavar="NAMES",
    help="Queues to take jobs from (repeat or comma-separate). [default: default]",
)
@click.option(
    "--handlers",
    "handler_paths",
    multiple=True,
    metavar="MODULE:ATTR",
    help=(
        "A calbridge.jobs.HandlerRegistry, or a callable taking the JobQueue and returning "
        "one, to load besides the built-in handlers (repeatable)."
    ),
)
@click.option("--lease", type=float, default=60.0, show_default=True, help="Lease seconds.")
@click.option(
    "--grace",
    type=float,
    default=25.0,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM before they are released.",
)
@click.option("--poll-interval", type=float, default=1.0, show_default=True)
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    help="Days finished (done, merged) jobs are kept before the hourly prune deletes them.",
)
@click.option(
    "--dead-retention",
    type=click.FloatRange(min=0),
    default=None,
    help="Days dead jobs are kept. [default: until `calbridge jobs --purge-dead`]",
)
@click.option("--once", is_flag=True, help="Run the jobs that are due now, then exit.")
@click.option(
    "--parent-pid",
    type=int,
    default=None,
    hidden=True,
    help="Stop (gracefully) once this process is no longer the parent (`calbridge serve` "
    "passes its own id).",
)
@click.option(
    "--nice",
    "niceness",
    type=click.IntRange(0, 19),
    default=0,
    show_default=True,
    help="Lower this process's CPU priority by N (os.nice): on a host that also receives "
    "webhooks, acknowledgements then go before background syncs (`calbridge serve` "
    "starts its workers with --nice 10).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def worker(
    *,
    config_path: str | None,
    database_url: str | None,
    concurrency: int,
    queues: tuple[str, ...],
    handler_paths: tuple[str, ...],
    lease: float,
    grace: float,
    poll_interval: float,
    retention: float,
    dead_retention: float | None,
    once: bool,
    parent_pid: int | None,
    niceness: int,
    log_level: str,
) -> None:
    """Run job handlers until SIGTERM or SIGINT.

    The worker claims jobs with a lease, renews it while the handler runs, and acks,
    retries (with backoff) or dead-letters each job. On SIGTERM it stops claiming and
    gives running jobs --grace seconds; unfinished jobs are released for another worker.
    A second signal releases them at once. Any number of workers, on any number of
    hosts, can share one PostgreSQL database.

    The store is the configuration's (--config / $CALBRIDGE_CONFIG, --database-url /
    $CALBRIDGE_DATABASE_URL); handlers that read the configuration, such as
    ``calbridge.bridge:worker_handlers``, see the same file.
    """
    from ..jobs import JobQueue, Worker, load_handlers

    if niceness:
        os.nice(niceness)

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = make_config(config_path, database_url)
    if config_path:
        # handlers loaded by path read $CALBRIDGE_CONFIG: give them the same file
        os.environ["CALBRIDGE_CONFIG"] = os.path.abspath(config_path)
    engine = open_engine(config)
    queue = JobQueue(engine)
    try:
        handlers = load_handlers(handler_paths, queue=queue)
    except ConfigurationError as exc:
        engine.dispose()
        raise click.UsageError(str(exc)) from None
    if not handlers.kinds():
        engine.dispose()
        raise click.UsageError("no job handlers to run: pass --handlers module:attribute")
    runner = Worker(
        queue,
        handlers,
        concurrency=concurrency,
        queues=_split(queues) or ["default"],
        lease=lease,
        grace=grace,
        poll_interval=poll_interval,
        retention=retention * 86400,
        dead_retention=None if dead_retention is None else dead_retention * 86400,
    )

    async def main() -> None:
        if once:
            count = await runner.run_until_idle()
            click.echo(f"ran {count} job(s)", err=True)
            return
        runner.handle_signals()
        watch = None if parent_pid is None else asyncio.create_task(_watch(parent_pid, runner))
        try:
            await runner.run()
        finally:
            if watch is not None:
                watch.cancel()

    try:
        asyncio.run(main())
    finally:
        engine.dispose()


async def _watch(parent: int, runner: Worker) -> None:
    """Stop ``runner`` once ``parent`` is no longer this process's parent (it died and
    this process was re-parented), so a supervisor killed outright leaves no worker."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells us; look every second
        await asyncio.sleep(1.0)
    logging.getLogger("calbridge.jobs").warning("the parent process is gone: stopping")
    runner.stop()


@click.command()
@bridge_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option(
    "--dead", "dead_limit", type=int, default=20, show_default=True, help="Dead jobs to list."
)
@click.option(
    "--retry",
    "retry_ids",
    type=int,
    multiple=True,
    metavar="ID",
    help="Queue dead job ID again with a fresh attempt budget (repeatable).",
)
@click.option(
    "--purge-dead",
    is_flag=True,
    help="Delete every dead job (they are kept until purged; workers prune done jobs).",
)
def jobs(
    *,
    config_path: str | None,
    database_url: str | None,
    as_json: bool,
    dead_limit: int,
    retry_ids: tuple[int, ...],
    purge_dead: bool,
) -> None:
    """Show job counts per queue and state, and the latest dead jobs with their errors.

    A SQLite file that does not exist is an error (nothing is created).
    """
    from ..jobs import JobQueue

    try:
        engine = open_engine(make_config(config_path, database_url), must_exist=True)
    except CalbridgeError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        queue = JobQueue(engine)
        not_dead = [i for i in retry_ids if (job := queue.get(i)) is None or job.state != "dead"]
        if not_dead:  # refuse the whole list before retrying any of it
            listed = ", ".join(map(str, not_dead))
            raise click.ClickException(f"job(s) {listed} not dead (or unknown): nothing retried")
        for job_id in retry_ids:
            if not queue.retry_dead(job_id):
                raise click.ClickException(f"job {job_id} is not dead")
        if purge_dead:
            purged = queue.prune(older_than=0, states=["dead"])
            click.echo(f"purged {purged} dead job(s)", err=True)
        stats = queue.stats()
        dead = queue.jobs(states=["dead"], limit=dead_limit)
    finally:
        engine.dispose()
    if as_json:
        print_json(
            {
                "queues": stats,
                "dead": [
                    {
                        "id": j.id,
                        "kind": j.kind,
                        "queue": j.queue,
                        "attempts": j.attempts,
                        "error": j.last_error,
                    }
                    for j in dead
                ],
            }
        )
        return
    states = ["queued", "running", "done", "dead", "merged"]
    print_table(
        "jobs",
        ["queue", *states],
        [(q, *(counts.get(s, 0) for s in states)) for q, counts in sorted(stats.items())],
    )
    if dead:
        print_table(
            "dead jobs",
            ["id", "kind", "attempts", "error"],
            [(j.id, j.kind, j.attempts, _last_line(j.last_error)) for j in dead],
        )


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""
