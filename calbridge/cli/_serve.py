"""``calbridge serve``: the webhook receiver under uvicorn, plus supervised worker processes.

The workers run as ``calbridge worker`` child processes by default, so a job's work never
holds up the receiver's event loop or its GIL (webhook acknowledgements stay fast). Serve
restarts a child that dies and, on shutdown, sends each SIGTERM (the worker's grace
period) and SIGKILL after ``--grace`` plus a margin. The children watch their parent and
stop by themselves if serve is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import click

from ._context import bridge_options, make_config

log = logging.getLogger("calbridge.serve")

#: handlers every child worker loads: the bridge's change pipeline and migration jobs
BRIDGE_HANDLERS: Final = "calbridge.bridge:worker_handlers"
#: seconds between SIGTERM plus the grace period and SIGKILL of a child
KILL_MARGIN: Final = 5.0
#: restart delays of a child that keeps dying: first and cap, seconds
RESTART_DELAY: Final = 1.0
RESTART_CAP: Final = 30.0
#: a child that ran this long before dying is restarted with the first delay again
STABLE_AFTER: Final = 60.0


class WorkerSupervisor:
    """Keeps ``count`` child processes of ``argv`` running until :meth:`stop`.

    A child that exits is restarted (after 1 s, doubling to 30 s while it keeps dying
    within a minute). :meth:`stop` sends SIGTERM to every child and SIGKILL to those
    still alive ``kill_after`` seconds later. Children start in a process group of their
    own: a terminal's Ctrl-C reaches serve only, which then stops them once, gracefully.
    They stay in serve's session, so on Linux they share its scheduler autogroup and
    their lower priority (``--nice``) takes effect against serve's: in a session of their
    own each would get an equal share of the CPU with serve, whatever its niceness, and
    acknowledgements waited behind the syncs (p99 0.2-0.3 s against 14-20 ms).
    """

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        env: Mapping[str, str] | None = None,
        kill_after: float = 30.0,
    ) -> None:
        self.argv = list(argv)
        self.count = count
        self.env = dict(env) if env is not None else None
        self.kill_after = kill_after
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def pids(self) -> list[int]:
        """Process ids of the children alive now."""
        return [p.pid for p in self.procs.values() if p.returncode is None]

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i)) for i in range(self.count)]

    async def _keep(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            started = loop.time()
            proc = await asyncio.create_subprocess_exec(*self.argv, env=self.env, process_group=0)
            self.procs[index] = proc
            if self._stopping.is_set():  # stop() ran while it was starting
                proc.send_signal(signal.SIGTERM)
            log.info("worker %d started (pid %d)", index, proc.pid)
            code = await proc.wait()
            if self._stopping.is_set():
                log.info("worker %d (pid %d) exited with %s", index, proc.pid, code)
                return
            if loop.time() - started >= STABLE_AFTER:
                delay = RESTART_DELAY
            log.warning(
                "worker %d (pid %d) exited with %s; restarting it in %g s",
                index,
                proc.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(RESTART_CAP, delay * 2)

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL what is left after ``kill_after``; reap them all."""
        self._stopping.set()
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=self.kill_after)
        if pending:
            for proc in self.procs.values():
                if proc.returncode is None:
                    log.warning("worker pid %d ignored SIGTERM; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@click.command()
@bridge_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--path",
    default="/",
    show_default=True,
    help="Mount path of the receiver (the path part of public_url); routes are PATH/<provider>.",
)
@click.option(
    "--workers",
    "-w",
    "worker_count",
    default=1,
    show_default=True,
    type=click.IntRange(0, 64),
    help="Worker processes (`calbridge worker` children, restarted when they die; "
    "0: receive only, run `calbridge worker` elsewhere).",
)
@click.option(
    "--worker-nice",
    default=10,
    show_default=True,
    type=click.IntRange(0, 19),
    help="The worker children run at this lower CPU priority (os.nice), so webhook "
    "acknowledgements go first when the host is busy syncing (0: same priority).",
)
@click.option(
    "--in-process-workers",
    is_flag=True,
    help="Run the workers inside this process instead (one process in all; webhook "
    "acknowledgements then wait while jobs run).",
)
@click.option(
    "--handlers",
    "handler_paths",
    multiple=True,
    metavar="MODULE:ATTR",
    help="More job handlers for the workers, as for `calbridge worker --handlers` (repeatable).",
)
@click.option(
    "--grace",
    default=25.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds running jobs get to finish on shutdown (then they are released).",
)
@click.option(
    "--concurrency",
    "-c",
    default=4,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Jobs each worker runs at once.",
)
@click.option(
    "--debounce",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0, 60),
    help="Seconds a notification-triggered sync waits for more notifications of its calendar "
    "(a burst then costs one provider read).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--metrics-path",
    default=None,
    metavar="PATH",
    help="Also serve Prometheus metrics at PATH (e.g. /metrics; $CALBRIDGE_METRICS_TOKEN, "
    "when set, is the bearer token it wants). Needs the console extra.",
)
@click.option(
    "--console-path",
    default=None,
    metavar="PATH",
    help="Also serve the operator console under PATH/ (e.g. /console; its login as for "
    "`calbridge console`: $CALBRIDGE_CONSOLE_PASSWORD). Needs the console extra.",
)
def serve(
    *,
    config_path: str | None,
    database_url: str | None,
    host: str,
    port: int,
    path: str,
    worker_count: int,
    in_process_workers: bool,
    handler_paths: tuple[str, ...],
    grace: float,
    concurrency: int,
    debounce: float,
    log_level: str,
    worker_nice: int = 10,
    metrics_path: str | None = None,
    console_path: str | None = None,
) -> None:
    """Serve the webhook receiver (one route per provider) and run job workers.

    Notifications are verified, recorded and queued before the answer; the workers, in
    child processes supervised by this one, run the sync, reconciliation, polling,
    channel-renewal and delivery jobs. SIGTERM or SIGINT stops accepting requests, then
    gives running jobs their grace period.
    """
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # the receiver commits in a thread: hand it the GIL promptly (default 5 ms), or every
    # statement of a commit waits behind the event loop and acknowledgements queue up
    sys.setswitchinterval(0.001)
    config = make_config(config_path, database_url)
    options = _Options(
        worker_count=worker_count,
        in_process=in_process_workers,
        handler_paths=handler_paths,
        grace=grace,
        concurrency=concurrency,
        config_path=config_path,
        log_level=log_level,
        nice=worker_nice,
    )
    options.extras = _extra_paths(metrics_path, console_path)
    if options.extras:
        from ._console import require_console

        require_console()
    if "console" in options.extras:
        from ..console import ConsoleSettings

        ConsoleSettings.from_env()  # no password configured: refuse before serving anything
    asyncio.run(_serve(config, host, port, path, options, debounce))


def _extra_paths(metrics_path: str | None, console_path: str | None) -> dict[str, str]:
    """The optional metrics and console paths, normalised (``/x``), checked apart."""
    extras: dict[str, str] = {}
    for name, value in (("metrics", metrics_path), ("console", console_path)):
        if value is not None:
            clean = "/" + value.strip("/")
            if clean == "/":
                raise click.UsageError(f"--{name}-path needs a path other than /")
            extras[name] = clean
    if len(set(extras.values())) < len(extras):
        raise click.UsageError("--metrics-path and --console-path must differ")
    return extras


def _server_class() -> Any:
    import contextlib
    import signal
    from collections.abc import Iterator

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server without re-raising the signal after shutdown (the workers
        still need their grace period; the process then exits normally)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            originals = {
                sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return Server


class _Options:
    def __init__(
        self,
        *,
        worker_count: int,
        in_process: bool,
        handler_paths: Sequence[str],
        grace: float,
        concurrency: int,
        config_path: str | None,
        log_level: str,
        nice: int = 10,
    ) -> None:
        self.worker_count = worker_count
        self.nice = nice
        self.in_process = in_process
        self.handler_paths = list(handler_paths)
        self.grace = grace
        self.concurrency = concurrency
        self.config_path = config_path
        self.log_level = log_level
        #: "metrics" / "console" -> the path serve also answers them at
        self.extras: dict[str, str] = {}


def worker_command(options: _Options) -> list[str]:
    """The ``calbridge worker`` command line of each child."""
    argv = [sys.executable, "-m", "calbridge", "worker", "--handlers", BRIDGE_HANDLERS]
    for path in options.handler_paths:
        argv += ["--handlers", path]
    return [
        *argv,
        "--concurrency",
        str(options.concurrency),
        "--grace",
        str(options.grace),
        "--log-level",
        options.log_level.upper(),
        "--nice",
        str(options.nice),
        "--parent-pid",
        str(os.getpid()),
    ]


def worker_env(database_url: str, config_path: str | None) -> dict[str, str]:
    """The children's environment: the store's URL (not on the command line, where
    ``ps`` would show its password) and the configuration file."""
    env = dict(os.environ)
    env["CALBRIDGE_DATABASE_URL"] = database_url
    if config_path:
        env["CALBRIDGE_CONFIG"] = os.path.abspath(config_path)
    return env


async def _serve(
    config: Any, host: str, port: int, path: str, options: _Options, debounce: float
) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ..bridge import CalBridge
    from ..errors import ConfigurationError
    from ..jobs import Worker, load_handlers
    from ..store import engine_url
    from ..webhooks import make_webhook_app

    _Server = _server_class()
    bridge = CalBridge(config)
    runtime = bridge.runtime
    app: Any = make_webhook_app(runtime, debounce=debounce)
    if options.extras:
        routes, receiver = _extra_routes(bridge, options.extras, app)
        app = Starlette(routes=[*routes, Mount("/" + path.strip("/"), app=receiver)])
    elif path.strip("/"):
        app = Starlette(routes=[Mount("/" + path.strip("/"), app=app)])
    from .._asgi import harden, uvicorn_options

    server = _Server(
        uvicorn.Config(
            harden(app),  # security headers, body read deadline, no Host-built redirect
            host=host,
            port=port,
            log_level=options.log_level.lower(),
            lifespan="off",
            access_log=False,
            **uvicorn_options(),  # header deadline, bounded heads (431), keep-alive
        )
    )
    workers: list[Worker] = []
    supervisor: WorkerSupervisor | None = None
    if options.in_process and options.worker_count:
        handlers = load_handlers(options.handler_paths, queue=runtime.queue)
        handlers.update(bridge.changes.handlers)  # the change pipeline and migration jobs
        workers = [
            Worker(runtime.queue, handlers, concurrency=options.concurrency, grace=options.grace)
            for _ in range(options.worker_count)
        ]
    elif options.worker_count:
        try:  # fail here, not in a restart loop of the children
            load_handlers(options.handler_paths, queue=runtime.queue)
        except ConfigurationError as exc:
            await bridge.aclose()
            raise click.UsageError(str(exc)) from None
        url = engine_url(runtime.engine, with_password=True)
        supervisor = WorkerSupervisor(
            worker_command(options),
            options.worker_count,
            env=worker_env(url, options.config_path),
            kill_after=options.grace + KILL_MARGIN,
        )
        supervisor.start()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await server.serve()
    finally:
        if supervisor is not None:
            await supervisor.stop()
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.aclose()


def _extra_routes(bridge: Any, extras: Mapping[str, str], receiver: Any) -> tuple[list[Any], Any]:
    """Routes for ``--metrics-path`` and ``--console-path`` (before the receiver's mount),
    and the receiver to mount (counted per provider and status with the metrics)."""
    from starlette.routing import Mount, Route

    from ..console import (
        ConsoleSettings,
        WebhookCounter,
        make_console_app,
        make_registry,
        metrics_endpoint,
    )

    routes: list[Any] = []
    if "metrics" in extras:
        token = os.environ.get("CALBRIDGE_METRICS_TOKEN") or None
        registry = make_registry(bridge.runtime.engine, clock=bridge.runtime.clock)
        routes.append(Route(extras["metrics"], metrics_endpoint(registry, token=token)))
        counter = WebhookCounter(registry, bridge.runtime.host.provider_names())
        receiver = counter.wrap(receiver)
    if "console" in extras:
        app = make_console_app(bridge, ConsoleSettings.from_env())
        routes.append(Mount(extras["console"], app=app))
    return routes, receiver
