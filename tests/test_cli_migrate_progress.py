"""Long `calbridge migrate` runs (subprocesses): each user's result is printed as it comes,
one user's 429 never aborts the run, and a rerun resumes where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.sandbox import LoopbackServer, World

from .test_cli_migrate import cli, connect, env, sandbox

__all__ = ["env", "sandbox"]

USERS = ("ann", "bob", "cat")


def run_cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-m", "calbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 3), out.stderr[-2000:]
    return out.returncode, out.stdout


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "calbridge", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
async def started(
    env: dict[str, str], sandbox: tuple[World, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Three users on Google, each re-authorised through Cronofy and in shadow."""
    world, srv = sandbox
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    for user in USERS:
        await connect(bridge, user, "google", f"{user}@example.com")
        await connect(bridge, user, "cronofy", f"{user}@example.com")
    await bridge.aclose()
    assert sorted(cli(env, "migrate", "start", "--json")["moved"]) == list(USERS)
    srv.call(lambda: world.clock.advance(600))  # Cronofy learns the native calendars
    return env


async def test_diff_goes_on_after_a_429_and_resumes_the_rest(
    started: dict[str, str], sandbox: tuple[World, LoopbackServer]
) -> None:
    world, _ = sandbox
    env = started
    # ann's first Google call is throttled through every retry of the HTTP layer, with no
    # Retry-After: the run cannot know when to come back, records her and goes on
    world.faults.fail_next("google", 429, times=4)
    # one user at a time, so the throttled calls are ann's (concurrency: test_migration_parity_many)
    code, out = run_cli(env, "migrate", "diff", "--jsonl", "--concurrency", "1")
    first = lines(out)
    assert code == 3  # a user is left to rerun
    assert [(r["app_user_id"], r["status"]) for r in first] == [
        ("ann", "rate_limited"),
        ("bob", "clean"),
        ("cat", "clean"),
    ]
    assert "429" in first[0]["error"]
    assert first[1]["compared"] >= 0

    # the rerun compares only the user the first run could not
    code, out = run_cli(env, "migrate", "diff", "--jsonl", "--skip-checked-since", "3600")
    again = sorted(lines(out), key=lambda r: str(r["app_user_id"]))  # skips finish first
    assert code == 0
    assert [(r["app_user_id"], r["status"]) for r in again] == [
        ("ann", "clean"),
        ("bob", "skipped"),
        ("cat", "skipped"),
    ]
    assert again[1]["last_parity"]["clean"] is True

    # --json keeps its one document (now with a status per user); text ends with a summary
    doc = cli(env, "migrate", "diff", "--json", "--skip-checked-since", "3600")
    assert [d["status"] for d in doc] == ["skipped"] * 3
    code, text = run_cli(env, "migrate", "diff", "--user", "bob")
    assert code == 0
    assert "bob: clean" in text
    assert "diff: clean 1 of 1" in text
    assert "\x1b" not in text  # no progress bar (nor colours) when stdout is not a TTY


async def test_diff_streams_each_user_as_it_finishes(
    started: dict[str, str], sandbox: tuple[World, LoopbackServer]
) -> None:
    """The first user's line is readable while later users are still being compared."""
    world, _ = sandbox
    world.faults.set_latency("google", 0.4)  # every later user takes > 0.8 s
    proc = spawn(started, "migrate", "diff", "--jsonl", "--concurrency", "1")
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["app_user_id"] == "ann"
        assert proc.poll() is None, "the first line came only when the run had ended"
        rest = [json.loads(line) for line in proc.stdout.read().splitlines() if line]
        assert [r["app_user_id"] for r in rest] == ["bob", "cat"]
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    world.faults.set_latency("google", 0.0)


async def test_start_streams_outcomes_and_a_rerun_resumes(
    started: dict[str, str], sandbox: tuple[World, LoopbackServer]
) -> None:
    """start reports each user on its own line; a rerun finds them moved (idempotent)."""
    env = started
    start = time.monotonic()
    code, out = run_cli(env, "migrate", "start", "--jsonl")
    assert code == 0
    assert [(r["user"], r["outcome"]) for r in lines(out)] == [(u, "already") for u in USERS]
    assert time.monotonic() - start < 60
    code, out = run_cli(env, "migrate", "plan", "--jsonl")
    assert [(r["app_user_id"], r["readiness"]) for r in lines(out)] == [
        (u, "in_progress") for u in USERS
    ]
    code, out = run_cli(env, "migrate", "dual", "--user", "ann")
    assert code == 0
    assert "  ann: moved" in out.splitlines()
    assert out.splitlines()[-1] == "dual: moved 1, already 0, refused 0"


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from io import StringIO

    from rich.console import Console

    from calbridge.cli import _migrate

    for terminal, quiet, shown in [(True, False, True), (True, True, False), (False, False, False)]:
        buf = StringIO()
        fake = Console(file=buf, force_terminal=terminal, width=100)
        monkeypatch.setattr(_migrate, "console", fake)
        with _migrate._progress("diff", 2, quiet=quiet) as advance:
            fake.print("ann: clean")
            advance()
            advance()
        text = buf.getvalue()
        assert "ann: clean" in text
        assert ("diff (2 users)" in text) is shown, (terminal, quiet)
