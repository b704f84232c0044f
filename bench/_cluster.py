"""A calbridge deployment on loopback for the benchmarks that need many processes.

PostgreSQL (a fresh database on the server ``$CALBRIDGE_TEST_POSTGRES_URL`` points at),
the provider sandbox (``calbridge sandbox serve``, Cronofy's rate limits on), a TOML config
file, and the real commands: ``calbridge serve`` (the webhook receiver) and ``calbridge
worker`` processes. This process plays the application: it connects users through the
real OAuth redirect flow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
CLIENT_ID = "bench-app"
#: also the key Cronofy notifications are signed with (bench_webhooks.CRONOFY_SECRET)
SECRET = "bench client secret"
CALBRIDGE = str(Path(sys.executable).with_name("calbridge"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def under_postgres(url: str | None) -> int | None:
    """Without a PostgreSQL server URL, run this script again under
    ``scripts/with-postgres.sh`` (a throwaway server) and return its exit status."""
    if url:
        return None
    script = ROOT / "scripts" / "with-postgres.sh"
    return subprocess.call(["bash", str(script), sys.executable, *sys.argv])


@contextlib.contextmanager
def fresh_database(base: str) -> Iterator[str]:
    """A new, empty database on ``base``'s server, dropped afterwards."""
    url = sa.engine.make_url(base)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Cluster:
    """The processes of one deployment; :meth:`stop` ends them all."""

    def __init__(self, url: str, workdir: Path) -> None:
        from calbridge.store import create_engine, generate_key

        self.url = url
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(
            os.environ,
            CALBRIDGE_KEYS=f"bench:{generate_key()}",
            BENCH_CRONOFY_SECRET=SECRET,
            CALBRIDGE_SANDBOX_CLIENT_SECRET=SECRET,
        )
        self.env.pop("CALBRIDGE_DATABASE_URL", None)
        self.engine = create_engine(url, upgrade=True)
        self.port = free_port()
        self.cronofy = ""
        self.config = workdir / "calbridge.toml"

    @property
    def control(self) -> str:
        """The sandbox's control endpoints."""
        return self.cronofy.rsplit("/", 1)[0] + "/_sandbox"

    def start(self) -> None:
        """The sandbox, then the config file (its URLs)."""
        proc = subprocess.Popen(
            [CALBRIDGE, "sandbox", "serve", "--client-id", CLIENT_ID],
            env=self.env,
            stdout=subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        bases = json.loads(proc.stdout.readline().decode())
        self.cronofy, google = str(bases["cronofy"]), str(bases["google"])
        self.config.write_text(
            "[calbridge]\n"
            f'database_url = "{self.url}"\n'
            f'public_url = "http://127.0.0.1:{self.port}"\n'
            'redirect_base = "http://127.0.0.1:9/oauth"\n'
            "[providers.cronofy]\n"
            f'client_id = "{CLIENT_ID}"\n'
            'client_secret_env = "BENCH_CRONOFY_SECRET"\n'
            f'base_urls = {{ api = "{self.cronofy}", app = "{self.cronofy}" }}\n'
            "[providers.google]\n"
            f'client_id = "{CLIENT_ID}"\n'
            'client_secret_env = "BENCH_CRONOFY_SECRET"\n'
            f'base_urls = {{ api = "{google}", accounts = "{google}", oauth2 = "{google}" }}\n',
            encoding="utf-8",
        )

    def _spawn(self, name: str, argv: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv), env=dict(self.env, **env), stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def serve(self, *extra: str) -> subprocess.Popen[bytes]:
        """``calbridge serve`` on :attr:`port` (the config's public URL), with ``extra``."""
        proc = self._spawn(
            "serve",
            [
                *(CALBRIDGE, "serve", "--config", str(self.config), "--port", str(self.port)),
                *("--log-level", "WARNING", *extra),
            ],
        )
        _wait_http(f"http://127.0.0.1:{self.port}/", proc)
        return proc

    def workers(self, count: int, concurrency: int) -> None:
        """``count`` processes of ``calbridge worker`` with the bridge's handlers."""
        for n in range(count):
            self._spawn(
                f"worker-{n}",
                [
                    *(CALBRIDGE, "worker", "--database-url", self.url),
                    *("--handlers", "calbridge.bridge:worker_handlers"),
                    *("--concurrency", str(concurrency), "--log-level", "warning"),
                    *("--poll-interval", "0.5"),
                    *("--nice", "10"),  # as `calbridge serve` starts its own: acks first
                ],
                CALBRIDGE_CONFIG=str(self.config),
            )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.engine.dispose()

    # -- the world and the application -------------------------------------------------

    async def seed(self, accounts: int, events: int) -> list[str]:
        """``accounts`` sandbox users, each with ``events`` events on their calendar."""
        emails = [f"user{n:05d}@bench.example" for n in range(accounts)]
        today = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        sem = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=self.control, timeout=30) as http:

            async def one(email: str) -> None:
                async with sem:
                    r = await http.post("/users", json={"email": email, "native": "google"})
                    r.raise_for_status()
                    cals = (await http.get(f"/users/{email}/calendars")).json()["calendars"]
                    for n in range(events):
                        start = today + dt.timedelta(days=1 + n, hours=2)
                        body = {
                            "summary": f"meeting {n}",
                            "start": start.isoformat(),
                            "end": (start + dt.timedelta(hours=1)).isoformat(),
                        }
                        path = f"/calendars/{cals[0]['id']}/events"
                        (await http.post(path, json=body)).raise_for_status()

            await asyncio.gather(*(one(e) for e in emails))
        return emails

    async def onboard(
        self, emails: list[str], concurrency: int, provider: str = "cronofy"
    ) -> tuple[float, list[float]]:
        """Connect every user to ``provider`` (OAuth redirect, code exchange, channel);
        returns (seconds, sorted connect latencies)."""
        from calbridge._config import BridgeConfig
        from calbridge.bridge import CalBridge

        os.environ.update(BENCH_CRONOFY_SECRET=SECRET, CALBRIDGE_KEYS=self.env["CALBRIDGE_KEYS"])
        bridge = CalBridge(BridgeConfig.from_file(self.config))
        sem = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        async with bridge, httpx.AsyncClient(timeout=120) as http:

            async def connect(email: str) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    url = await bridge.connect_url(email, provider, login_hint=email)
                    answer = await http.get(url)
                    params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
                    await bridge.complete_connect(provider, params)
                    latencies.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(connect(e) for e in emails))
            return time.perf_counter() - t0, sorted(latencies)

    def synced(self) -> tuple[int, int, int]:
        """(calendars synced, calendars known, sync jobs queued or running)."""
        from calbridge.jobs._schema import jobs
        from calbridge.store import schema

        sc = schema.sync_cursors.c
        with self.engine.connect() as conn:
            done = conn.execute(
                sa.select(sa.func.count()).where(sc.cursor.is_not(None))
            ).scalar_one()
            known = conn.execute(
                sa.select(sa.func.count()).select_from(schema.sync_cursors)
            ).scalar_one()
            pending = conn.execute(
                sa.select(sa.func.count()).where(
                    jobs.c.kind == "sync", jobs.c.state.in_(["queued", "running"])
                )
            ).scalar_one()
            return int(done), int(known), int(pending)

    def wait_synced(self, accounts: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while True:
            done, known, pending = self.synced()
            if done >= accounts and done >= known and pending == 0:
                return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not synced in time: {done}/{known}, {pending} pending")
            time.sleep(0.25)

    def channels(self) -> list[list[str]]:
        """[channel id, calendar id] of every Cronofy channel in the store."""
        from calbridge.store import schema

        ch = schema.channels.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(ch.id, ch.calendar_ids)).all()
        return [[r.id, next(iter(r.calendar_ids))] for r in rows if r.calendar_ids]

    def counts(self, reset: bool = False) -> dict[str, Any]:
        """What the Cronofy sandbox answered (its own figures); ``reset``: start again."""
        if reset:
            httpx.delete(f"{self.control}/requests").raise_for_status()
            return {}
        found: dict[str, Any] = httpx.get(f"{self.control}/requests").json()["providers"]
        cronofy: dict[str, Any] = found.get("cronofy") or {
            "requests": 0,
            "limited": 0,
            "throttled": 0,
            "statuses": {},
        }
        return cronofy


def table(rows: Sequence[tuple[str, Any]]) -> str:
    """A markdown table of (measure, value) rows."""
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def write_section(start: str, end: str, body: str) -> None:
    """Replace (or add) the section between ``start`` and ``end`` in docs/benchmarks.md."""
    text = DOCS.read_text(encoding="utf-8")
    section = f"{start}\n{body}\n{end}"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text, encoding="utf-8")


Result = dict[str, Any]


def bench_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace, str, Path], Result],
    report: Callable[[Result], str],
    *,
    section: tuple[str, str],
    describe: Callable[[Result], str],
) -> int:
    """The common ``main`` of the cluster benchmarks: parse (adding ``--postgres-url``,
    ``--keep``, ``--json``, ``--write-docs``), run on a fresh database (under a throwaway
    PostgreSQL server when none is given), print, and record in docs/benchmarks.md the
    heading and text ``describe`` gives followed by the run's table."""
    parser.add_argument("--postgres-url", default=os.environ.get("CALBRIDGE_TEST_POSTGRES_URL"))
    parser.add_argument("--keep", metavar="DIR", help="keep config and process logs in DIR")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rerun = under_postgres(args.postgres_url)
    if rerun is not None:
        return rerun
    with fresh_database(args.postgres_url) as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, url, workdir)
    print(json.dumps(result) if args.json else report(result))
    if args.write_docs:
        write_section(
            *section,
            f"{describe(result)}\n\nLast run {dt.date.today().isoformat()}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs:\n\n{report(result)}",
        )
    return 0
