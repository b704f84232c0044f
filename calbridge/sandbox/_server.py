"""The composite sandbox app and a loopback server runner for tests and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from ..hookspecs import SandboxFactory
from ._control import control_routes
from ._world import World

__all__ = ["LoopbackServer", "build_app", "installed_sandboxes", "serve_in_thread"]

log = logging.getLogger("calbridge.sandbox")

T = TypeVar("T")


def installed_sandboxes() -> Mapping[str, SandboxFactory]:
    """Every provider sandbox registered through the plugin hook (fresh plugin host)."""
    from .._manager import PluginHost

    return PluginHost().load().sandbox_factories()


def build_app(
    world: World,
    sandboxes: Mapping[str, SandboxFactory] | None = None,
    *,
    control: bool = True,
    tick_interval: float | None = None,
) -> Starlette:
    """One ASGI app serving every provider sandbox under ``/{provider}``.

    Args:
        world: the shared world.
        sandboxes: provider name -> factory (default: every installed sandbox).
        control: mount the control endpoints under ``/_sandbox``.
        tick_interval: when set, a background task runs the clock's due timers every
            ``tick_interval`` seconds while the app runs (needed with a real-time clock
            so writes are applied and notifications go out on their own).
    """
    factories = dict(installed_sandboxes() if sandboxes is None else sandboxes)
    routes: list[Mount] = [
        Mount(f"/{name}", app=factory(world)) for name, factory in factories.items()
    ]
    if control:
        routes.append(Mount("/_sandbox", routes=control_routes(world, sorted(factories))))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if tick_interval is not None:
            task = asyncio.create_task(_tick(world, tick_interval))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return Starlette(routes=routes, lifespan=lifespan)


async def _tick(world: World, interval: float) -> None:
    while True:
        try:
            await world.clock.run_due()
        except Exception:  # pragma: no cover - timers log their own failures
            log.exception("sandbox ticker failed")
        await asyncio.sleep(interval)


class LoopbackServer:
    """A running uvicorn server on loopback (see :func:`serve_in_thread`)."""

    def __init__(self, base_url: str, loop: asyncio.AbstractEventLoop) -> None:
        #: ``http://127.0.0.1:PORT`` (no trailing slash)
        self.base_url = base_url
        #: the server thread's event loop
        self.loop = loop

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
        """Run a coroutine function on the server's loop and wait for its result.

        Use it to drive the world's clock from a test thread (e.g.
        ``server.call(lambda: world.clock.advance(300))``), so timers, the app and the
        ticker share one loop.
        """

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)


@contextlib.contextmanager
def serve_in_thread(
    app: Callable[..., Awaitable[None]] | Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 15.0,
) -> Iterator[LoopbackServer]:
    """Run ``app`` with uvicorn on ``host:port`` (0 = any free port) in a daemon thread.

    Yields a :class:`LoopbackServer` once it accepts connections; stops it on exit::

        with serve_in_thread(build_app(world)) as server:
            httpx.get(server.base_url + "/_sandbox/")
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # pragma: no cover - reported to the caller
            failure.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"calbridge-sandbox-{bound_port}", daemon=True)
    thread.start()
    waited = 0.0
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"sandbox server failed to start: {failure!r}")
        if waited > startup_timeout:
            server.should_exit = True
            raise RuntimeError("sandbox server did not start in time")
        threading.Event().wait(0.01)
        waited += 0.01
    try:
        yield LoopbackServer(f"http://{host}:{bound_port}", loop)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
