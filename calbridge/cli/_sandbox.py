"""``calbridge sandbox``: run every installed provider sandbox on one loopback port."""

from __future__ import annotations

import json
import socket
import sys

import click

__all__ = ["sandbox"]


@click.group()
def sandbox() -> None:
    """Local emulators of the providers' APIs (no network, no accounts)."""


@sandbox.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port, 0 to 65535 (0 picks a free one).",
)
@click.option(
    "--client-id",
    default="sandbox-client",
    show_default=True,
    envvar="CALBRIDGE_SANDBOX_CLIENT_ID",
    help="OAuth client id every provider sandbox accepts.",
)
@click.option(
    "--client-secret",
    default="sandbox-secret",
    envvar="CALBRIDGE_SANDBOX_CLIENT_SECRET",
    help="OAuth client secret (also signs Cronofy notifications). "
    "Prefer the CALBRIDGE_SANDBOX_CLIENT_SECRET environment variable.",
)
@click.option(
    "--manual-clock",
    is_flag=True,
    help="Freeze the sandbox clock; it moves only through POST /_sandbox/clock.",
)
@click.option(
    "--tick",
    default=0.2,
    show_default=True,
    help="Seconds between runs of due timers (write application, deliveries, polling).",
)
@click.option(
    "--no-rate-limits",
    is_flag=True,
    help="Never answer 429 for exceeding a provider's rate limits (benchmarks).",
)
@click.option(
    "--tls-dir",
    type=click.Path(file_okay=False, writable=True),
    default=None,
    help="Serve HTTPS: write a fresh private CA (ca.pem, the file clients trust), a "
    "loopback certificate and its key into this folder.",
)
@click.option("--log-level", default="warning", show_default=True, help="uvicorn log level.")
def serve(
    *,
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    manual_clock: bool,
    tick: float,
    no_rate_limits: bool,
    tls_dir: str | None,
    log_level: str,
) -> None:
    """Serve every installed provider sandbox under its own prefix until interrupted.

    The first line on stdout is one JSON object mapping each provider name to its base
    URL (e.g. {"cronofy": "http://127.0.0.1:PORT/cronofy"}). Control endpoints live under
    /_sandbox (see docs/sandbox.md).

    The sandboxes keep their state in memory; they take no --config and never read the
    deployment's configuration or store ($CALBRIDGE_CONFIG, $CALBRIDGE_DATABASE_URL).
    """
    import uvicorn

    from ..sandbox import Clock, World, build_app, installed_sandboxes, make_tls_files

    world = World(
        clock=Clock() if manual_clock else Clock.realtime(), rate_limits=not no_rate_limits
    )
    world.add_application(client_id, client_secret)
    factories = installed_sandboxes()
    app = build_app(world, factories, tick_interval=tick)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "pick another --port (0 picks a free one) or --host"
        ) from None
    # listening before the URLs are printed: a client that reads them and connects at once
    # waits in the backlog until uvicorn accepts, instead of being refused
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    tls = make_tls_files(tls_dir, hosts=[host]) if tls_dir else None
    origin = f"{'https' if tls else 'http'}://{shown}:{bound}"
    sys.stdout.write(json.dumps({name: f"{origin}/{name}" for name in sorted(factories)}) + "\n")
    sys.stdout.flush()
    click.echo(f"calbridge sandbox on {origin} (control: {origin}/_sandbox/)", err=True)
    if tls:
        click.echo(f"clients trust {tls.ca}", err=True)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    uvicorn.Server(config).run(sockets=[sock])
