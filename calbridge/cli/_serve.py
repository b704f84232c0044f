"""``calbridge serve``: the webhook receiver under uvicorn, plus in-process job workers."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from ._context import bridge_options, make_config


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
    help="Job workers run in this process (0: receive only; run `calbridge worker` elsewhere).",
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
def serve(
    *,
    config_path: str | None,
    database_url: str | None,
    host: str,
    port: int,
    path: str,
    worker_count: int,
    concurrency: int,
    debounce: float,
    log_level: str,
) -> None:
    """Serve the webhook receiver (one route per provider) and run job workers.

    Notifications are verified, recorded and queued before the answer; the workers run
    the sync, reconciliation, polling, channel-renewal and delivery jobs. SIGTERM or
    SIGINT stops accepting requests, then gives running jobs their grace period.
    """
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # the receiver commits in a thread: hand it the GIL promptly (default 5 ms), or every
    # statement of a commit waits behind the event loop and acknowledgements queue up
    sys.setswitchinterval(0.001)
    config = make_config(config_path, database_url)
    asyncio.run(_serve(config, host, port, path, worker_count, concurrency, debounce, log_level))


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


async def _serve(
    config: Any,
    host: str,
    port: int,
    path: str,
    worker_count: int,
    concurrency: int,
    debounce: float,
    log_level: str,
) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from ..bridge import CalBridge
    from ..jobs import Worker
    from ..webhooks import make_webhook_app

    _Server = _server_class()
    bridge = CalBridge(config)
    runtime = bridge.runtime
    handlers = bridge.changes.handlers  # the change pipeline and the migration jobs
    app: Any = make_webhook_app(runtime, debounce=debounce)
    if path.strip("/"):
        app = Starlette(routes=[Mount("/" + path.strip("/"), app=app)])
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, log_level=log_level.lower(), lifespan="off", access_log=False
        )
    )
    workers = [
        Worker(runtime.queue, handlers, concurrency=concurrency) for _ in range(worker_count)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await server.serve()
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bridge.aclose()
