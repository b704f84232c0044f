"""A refused command changes nothing (issue #19 item 3): every mutating command, run as an
operator runs it (the real ``calbridge`` in a subprocess against a real store), checks
before it writes. Each case below is refused (non-zero exit, a message saying why) and
leaves every table of the store exactly as it was."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.jobs import JobQueue
from calbridge.sandbox import LoopbackServer, World
from calbridge.store import create_engine, schema

from .test_cli_migrate import cli, connect, env, sandbox

__all__ = ["env", "sandbox"]

#: (arguments, words the refusal's message must contain); the keys cases change
#: CALBRIDGE_KEYS as ``keys_case`` says
REFUSED: list[tuple[tuple[str, ...], str]] = [
    # routing: a pin that would cut a user off, unknown names, contradictory flags
    (("route", "bob", "--pin", "cronofy"), "no active cronofy account"),
    (("route", "bob", "--pin", "gogle"), "google"),
    (("route", "bob", "--pin", "google", "--unpin"), "--unpin"),
    (("route", "nobody", "--pin", "google"), "nobody"),
    # migration steps whose guards refuse every selected user (bob is held already)
    (("migrate", "start", "--user", "bob"), "has not authorised cronofy"),
    (("migrate", "cutover", "--user", "ann"), "skips a phase"),
    (("migrate", "retire", "--user", "ann"), "ann"),
    (("migrate", "dual", "--user", "nobody"), "nobody"),
    (("migrate", "enroll", "--percent", "150"), "150"),
    (("migrate", "start", "--users-file", "/nonexistent/users.txt"), "users.txt"),
    # jobs: one id that is not dead refuses the whole list (the dead one stays dead)
    (("jobs", "--retry", "{dead}", "--retry", "999999"), "999999"),
    # keys: no keys, and a key ring without the key the stored secrets are under
    (("keys", "rotate", "no keys"), "CALBRIDGE_KEYS"),
    (("keys", "rotate", "new key only"), "k1"),
    # the database: an unknown revision
    (("db", "upgrade", "--revision", "9999_future"), "9999_future"),
]

#: commands that only look: they succeed and write nothing
READ_ONLY: list[tuple[str, ...]] = [
    ("route", "bob"),
    ("route", "ann", "--explain"),
    ("route", "ann", "--json"),
    ("accounts", "--json"),
    ("channels", "--json"),
    ("jobs", "--json"),
    ("migrate", "status", "--json"),
    ("migrate", "plan", "--json"),
    ("migrate", "start", "--user", "bob", "--dry-run"),
    ("migrate", "dual", "--user", "ann", "--dry-run", "--json"),
    ("db", "status", "--json"),
    ("keys", "check", "--json"),
    ("providers", "--json"),
]


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    engine = create_engine(url, must_exist=True)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(
                    (tuple(map(repr, row)) for row in conn.execute(sa.select(table))),
                )
                for name, table in schema.metadata.tables.items()
            }
    finally:
        engine.dispose()


@pytest.fixture
async def deployment(
    env: dict[str, str], sandbox: tuple[World, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """ann (Google and Cronofy, in shadow), bob (Google only), one dead job."""
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    await connect(bridge, "ann", "google", "ann@example.com")
    await connect(bridge, "ann", "cronofy", "ann@example.com")
    await connect(bridge, "bob", "google", "bob@example.com")
    url = str(bridge.runtime.engine.url)
    queue = JobQueue(bridge.runtime.engine)
    dead = queue.enqueue("no-such-handler", {}, max_attempts=1)
    job = queue.claim(owner="test", kinds=["no-such-handler"], lease=30)
    assert job is not None
    queue.fail(job, error="refused on purpose")
    assert queue.get(dead) is not None
    await bridge.aclose()
    assert cli(env, "migrate", "start", "--user", "ann", "--json")["moved"] == ["ann"]
    return {"url": url, "dead": dead}


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
async def test_refused_commands_change_nothing(
    env: dict[str, str], deployment: dict[str, Any]
) -> None:
    from calbridge.store.vault import generate_key

    before = snapshot(deployment["url"])
    assert before["accounts"]
    assert before["routing_state"]
    failures = []

    # the one write of a refused step, said in its answer: start holds bob on legacy
    held = run(env, "migrate", "start", "--user", "bob")
    assert held.returncode == 3, held.stderr
    assert "held on legacy" in held.stdout
    after = snapshot(deployment["url"])
    assert sorted(n for n in before if before[n] != after[n]) == ["audit_log", "routing_state"]
    before = after

    for argv in READ_ONLY:
        out = run(env, *argv)
        after = snapshot(deployment["url"])
        if out.returncode not in (0, 1):  # keys check exits 1 while old keys remain
            failures.append(f"{' '.join(argv)}: exit {out.returncode}, {out.stderr[-300:]!r}")
        failures += [
            f"{' '.join(argv)} (read-only) changed {n}" for n in before if before[n] != after[n]
        ]
        before = after

    for args, words in REFUSED:
        argv = tuple(a.format(dead=deployment["dead"]) for a in args)
        case_env = dict(env)
        if argv[:2] == ("keys", "rotate"):
            argv, keys_case = argv[:2], argv[2]
            case_env.pop("CALBRIDGE_KEYS")
            if keys_case == "new key only":  # the operator dropped the old key too early
                case_env["CALBRIDGE_KEYS"] = f"k9:{generate_key()}"
        out = run(case_env, *argv)
        after = snapshot(deployment["url"])
        changed = sorted(name for name in before if before[name] != after[name])
        if out.returncode == 0 or words.lower() not in (out.stderr + out.stdout).lower():
            failures.append(f"{' '.join(argv)}: exit {out.returncode}, {out.stderr[-300:]!r}")
        for name in changed:
            gone = sorted(set(before[name]) - set(after[name]))
            new = sorted(set(after[name]) - set(before[name]))
            failures.append(f"{' '.join(argv)}: changed {name}: -{gone} +{new}")
        before = after  # one case's change does not hide the next's
    assert not failures, "\n".join(failures)
