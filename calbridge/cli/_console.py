"""``calbridge console``: the operator console (and ``/metrics``) under uvicorn."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from typing import TYPE_CHECKING

import click

from ._context import bridge_options, make_bridge

if TYPE_CHECKING:
    from ..console import ConsoleSettings


#: what the console needs beyond the server extra (top-level module names)
CONSOLE_MODULES = frozenset({"jinja2", "itsdangerous", "prometheus_client"})


def require_console() -> None:
    """Import the console, or say which extra installs what is missing."""
    try:
        import calbridge.console  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in CONSOLE_MODULES:
            raise
        raise click.ClickException(
            f'{exc.name} is not installed: install "calbridge[console]"'
        ) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@bridge_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--path",
    default="/",
    show_default=True,
    help="Mount path of the console (behind a proxy that serves it under a prefix).",
)
@click.option(
    "--cookie-secure/--no-cookie-secure",
    default=True,
    show_default=True,
    help="Mark the session cookie Secure (HTTPS only). Turn off only for plain HTTP on loopback.",
)
@click.option(
    "--no-login",
    is_flag=True,
    help="Serve without a login (operator `local`); refused unless --host is loopback.",
)
@click.option(
    "--hash-password",
    is_flag=True,
    help="Read a password (prompt, or stdin when not a terminal), print its hash for "
    "$CALBRIDGE_CONSOLE_PASSWORD and exit.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
def console(
    *,
    config_path: str | None,
    database_url: str | None,
    host: str,
    port: int,
    path: str,
    cookie_secure: bool,
    no_login: bool,
    hash_password: bool,
    log_level: str,
) -> None:
    """Serve the operator console: cohorts by migration phase, one page per user (route,
    accounts, parity, audit trail, channels, jobs) with the migration actions, and
    Prometheus metrics at /metrics.

    The login is one operator password from $CALBRIDGE_CONSOLE_PASSWORD (a hash from
    --hash-password, or the password itself); sessions are signed with
    $CALBRIDGE_CONSOLE_SESSION_KEY (random per process when unset). Without a password
    the console does not start. $CALBRIDGE_METRICS_TOKEN, when set, is the bearer token
    /metrics wants. Every confirmed action writes an audit entry naming the operator.
    """
    require_console()
    from ..console import ConsoleSettings
    from ..console import hash_password as make_hash

    if hash_password:
        if sys.stdin.isatty():
            secret = click.prompt("password", hide_input=True, confirmation_prompt=True)
        else:
            secret = sys.stdin.readline().rstrip("\n")
        if not secret:
            raise click.UsageError("an empty password is no password")
        click.echo(make_hash(secret))
        return
    if no_login and not _loopback(host):
        raise click.UsageError("--no-login serves every action to anyone: loopback --host only")
    settings = ConsoleSettings.from_env(login=not no_login, secure_cookies=cookie_secure)
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(config_path, database_url, settings, host, port, path, log_level))


async def _serve(
    config_path: str | None,
    database_url: str | None,
    settings: ConsoleSettings,
    host: str,
    port: int,
    path: str,
    log_level: str,
) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from .._asgi import harden, uvicorn_options
    from ..console import CONSOLE_CSP, make_console_app

    bridge = make_bridge(config_path, database_url, must_exist=True)
    try:
        app = make_console_app(bridge, settings)
        served = app
        if path.strip("/"):
            served = harden(
                Starlette(routes=[Mount("/" + path.strip("/"), app=app)]), csp=CONSOLE_CSP
            )
        server = uvicorn.Server(
            uvicorn.Config(
                served,
                host=host,
                port=port,
                log_level=log_level.lower(),
                lifespan="off",
                access_log=False,
                **uvicorn_options(),
            )
        )
        await server.serve()
    finally:
        await bridge.aclose()
