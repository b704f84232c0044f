"""Helpers of the job-queue suite: a fake clock, the effects table, worker subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa

from calbridge.jobs import jobs

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "jobsworker.py"

#: the side effects of test handlers, one row per job at most (idempotent handlers)
effects_metadata = sa.MetaData()
effects = sa.Table(
    "test_effects",
    effects_metadata,
    sa.Column("job_id", sa.BigInteger, primary_key=True),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
)


class FakeClock:
    """A settable clock in epoch seconds."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def count(engine: sa.Engine, *where: sa.ColumnElement[bool]) -> int:
    with engine.connect() as conn:
        q = sa.select(sa.func.count()).select_from(jobs).where(*where)
        return int(conn.execute(q).scalar_one())


def job_rows(engine: sa.Engine) -> dict[int, sa.RowMapping]:
    with engine.connect() as conn:
        return {r.id: r._mapping for r in conn.execute(sa.select(jobs))}


def effect_rows(engine: sa.Engine) -> dict[int, sa.RowMapping]:
    with engine.connect() as conn:
        return {r.job_id: r._mapping for r in conn.execute(sa.select(effects))}


def start_worker(
    url: str,
    log: Path,
    *,
    concurrency: int = 2,
    lease: float = 30.0,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A worker subprocess running ``jobsworker.py`` (see its docstring); ``env`` is added
    to the environment."""
    cmd = [
        sys.executable,
        str(WORKER_SCRIPT),
        "--url",
        url,
        "--log",
        str(log),
        "--concurrency",
        str(concurrency),
        "--lease",
        str(lease),
        *args,
    ]
    with log.with_suffix(".err").open("ab") as err:
        return subprocess.Popen(cmd, stderr=err, env={**os.environ, **(env or {})})


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 15.0) -> None:
    """SIGTERM (then SIGKILL) every live worker and reap them all."""
    for p in procs:
        if p.poll() is None:
            with _suppress_lookup():
                os.kill(p.pid, signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def stderr_of(log: Path) -> str:
    """What the worker writing ``log`` printed on stderr."""
    return log.with_suffix(".err").read_text(errors="replace")


def process_state(pid: int) -> str:
    """The state letter of ``pid`` from /proc (``T`` = stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def read_log(paths: Sequence[Path]) -> list[list[str]]:
    """Lines of the workers' run logs, split on spaces."""
    out: list[list[str]] = []
    for p in paths:
        if p.exists():
            out.extend(line.split() for line in p.read_text().splitlines() if line.strip())
    return out
