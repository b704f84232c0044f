"""``calbridge serve`` runs its workers as supervised child processes (SQLite, PostgreSQL):
they run the jobs, a child that dies is restarted, SIGTERM to serve stops them all, and
children of a serve killed outright stop by themselves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from calbridge.jobs import JobQueue, jobs
from calbridge.store.testing import db_url, engine, fresh_postgres_url
from tests.jobs.jobsupport import wait_for

__all__ = ["db_url", "engine", "fresh_postgres_url"]

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.jobs.jobshandlers:handlers"


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def workers_of(serve_pid: int) -> set[int]:
    """Processes started by that serve (re-parented or not), by their command line."""
    mark = f"--parent-pid\0{serve_pid}\0".encode()
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark in (entry / "cmdline").read_bytes():
                    out.add(int(entry.name))
            except OSError:
                continue
    return out


def niceness(pid: int) -> int:
    """The process's nice value (field 19 of /proc/<pid>/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.fixture
def serve(db_url: str, engine: sa.Engine, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``calbridge serve`` with two worker processes on a migrated store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALBRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "calbridge",
            "serve",
            "--database-url",
            db_url,
            "--port",
            "0",
            "--workers",
            "2",
            "--concurrency",
            "1",
            "--grace",
            "2",
            "--handlers",
            HANDLERS,
        ],
        cwd=ROOT,
        env=env,
        stderr=log,
        stdout=log,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in workers_of(proc.pid):  # none unless a test failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
        print((tmp_path / "serve.log").read_text(errors="replace"))  # shown when a test fails


def run_whoami(queue: JobQueue, out: Path) -> int:
    """Enqueue a job that writes its process id to ``out``; that id once it ran."""
    queue.enqueue("whoami", {"out": str(out)})
    wait_for(out.exists, timeout=30, what="the job to run")
    wait_for(lambda: out.read_text().strip() != "", timeout=5)
    return int(out.read_text())


@pytest.mark.slow
def test_serve_supervises_worker_processes(
    serve: subprocess.Popen[bytes], engine: sa.Engine, tmp_path: Path
) -> None:
    queue = JobQueue(engine)
    wait_for(lambda: len(children(serve.pid)) == 2, timeout=30, what="two worker processes")
    first = children(serve.pid)

    # in serve's session (one scheduler autogroup: their lower priority counts against
    # serve's), in a process group of their own (a terminal's Ctrl-C reaches serve only)
    for pid in first:
        assert os.getsid(pid) == os.getsid(serve.pid)
        assert os.getpgid(pid) != os.getpgid(serve.pid)
    lower = min(19, niceness(serve.pid) + 10)  # a worker lowers its priority as it starts
    wait_for(lambda: {niceness(pid) for pid in first} == {lower}, timeout=30, what="nice 10")

    # the children, not serve, run the jobs
    assert run_whoami(queue, tmp_path / "a") in first

    # a child that dies is replaced
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = children(serve.pid)  # one look: SIGKILL takes a moment to land
        return len(now) == 2 and victim not in now

    wait_for(replaced, timeout=30, what="the killed worker to be restarted")
    second = children(serve.pid)
    assert len(second - first) == 1
    for n in range(4):
        assert run_whoami(queue, tmp_path / f"b{n}") in second

    # SIGTERM to serve: everything stops, nothing is left behind
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=30) == 0
    for pid in first | second:
        assert not alive(pid), f"worker {pid} outlived serve"
    # the graceful workers released what they held; only a job the killed worker had
    # claimed (a recurring one, at its start) waits for its lease to expire
    with engine.connect() as conn:
        held = (
            conn.execute(sa.select(jobs.c.lease_owner).where(jobs.c.state == "running"))
            .scalars()
            .all()
        )
    assert all(owner and f":{victim}:" in owner for owner in held), held


@pytest.mark.slow
def test_workers_of_a_killed_serve_stop_by_themselves(serve: subprocess.Popen[bytes]) -> None:
    wait_for(lambda: len(children(serve.pid)) == 2, timeout=30, what="two worker processes")
    workers = children(serve.pid)

    serve.kill()
    serve.wait()
    assert workers_of(serve.pid) == workers

    wait_for(
        lambda: not any(alive(pid) for pid in workers),
        timeout=20,
        what="the orphaned workers to stop",
    )
