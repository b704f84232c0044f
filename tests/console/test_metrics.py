"""``/metrics``: gauges read from the store at scrape time (console and ``calbridge
serve --metrics-path``), the console's own counters, and the bearer token."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from calbridge import Secret
from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.console import (
    CONSOLE_CSP,
    ConsoleSettings,
    hash_password,
    make_console_app,
)

from .conftest import PASSWORD, _free_port


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def bridge(env: dict[str, str], population: dict[str, str]) -> AsyncIterator[CalBridge]:
    async with CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"])) as opened:
        yield opened


async def test_store_gauges_match_the_store(bridge: CalBridge, env: dict[str, str]) -> None:
    """Users per phase, accounts, channels, jobs, the inbox's backlog and lag (a
    notification received two minutes ago, unprocessed) and the rate budget's windows,
    as the store holds them; the console's login counter counts this process's logins."""
    config = BridgeConfig.from_file(env["CALBRIDGE_CONFIG"])
    async with CalBridge(config, clock=lambda: time.time() - 120) as earlier:
        assert earlier.store.channels.inbox_insert(
            provider="google", delivery_key="msg-1", kind="sync", payload={"n": 1}
        )
    settings = ConsoleSettings(
        password=Secret(hash_password(PASSWORD, iterations=1000)),
        metrics_token=Secret("scrape-me"),
    )
    app = make_console_app(bridge, settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://c.test") as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        page = await http.get("/login")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        await http.post("/login", data={"csrf": csrf, "operator": "al", "password": PASSWORD})
        answer = await http.get("/metrics", headers={"authorization": "Bearer scrape-me"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert answer.headers["content-security-policy"] == CONSOLE_CSP
    m = _samples(answer.text)

    assert _value(m, "calbridge_store_up") == 1
    phases = {p: _value(m, "calbridge_users", phase=p) for p in ("legacy", "shadow", "dual")}
    assert phases == {"legacy": 1, "shadow": 1, "dual": 1}  # bob, ann, dave
    assert _value(m, "calbridge_users", phase="not_under_migration") == 1  # erin
    assert _value(m, "calbridge_users", phase="cutover") == 0
    assert _value(m, "calbridge_accounts", provider="google", status="active") == 4
    assert _value(m, "calbridge_accounts", provider="cronofy", status="active") == 2
    channels = {
        (c.channel.provider, c.health) for c in bridge.store.channels.list_channels()
    }  # the sandboxes have no public callback: every account is polled
    for provider, state in channels:
        count = sum(
            1
            for c in bridge.store.channels.list_channels()
            if (c.channel.provider, c.health) == (provider, state)
        )
        assert _value(m, "calbridge_channels", provider=provider, state=state) == count
    per_state: dict[tuple[str, str], float] = {}
    for (name, labels), value in m.items():
        if name == "calbridge_jobs":
            got = dict(labels)
            key = (got["queue"], got["state"])
            per_state[key] = per_state.get(key, 0) + value
    expected = {
        (queue, state): count
        for queue, states in bridge.runtime.queue.stats().items()
        for state, count in states.items()
    }
    assert per_state == expected
    assert _value(m, "calbridge_jobs", queue="default", kind="sync", state="queued") >= 1
    assert _value(m, "calbridge_jobs_retrying", queue="default", kind="sync") == 0
    age = _value(
        m, "calbridge_jobs_oldest_age_seconds", queue="default", kind="sync", state="queued"
    )
    assert age >= 0

    assert _value(m, "calbridge_webhook_inbox_pending", provider="google") == 1
    lag = _value(m, "calbridge_webhook_inbox_lag_seconds", provider="google")
    assert 119 <= lag < 200
    last = _value(m, "calbridge_webhook_last_received_timestamp_seconds", provider="google")
    assert abs(last - (time.time() - 120)) < 60

    budget = {key: value for key, value in m.items() if key[0] == "calbridge_rate_budget_grants"}
    assert budget  # connecting read calendars through the shared budget
    assert all(value >= 1 for value in budget.values())
    assert _value(m, "calbridge_console_logins_total", outcome="ok") == 1


@pytest.fixture
def served(env: dict[str, str], population: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``calbridge serve --workers 0`` with the metrics and the console mounted."""
    port = _free_port()
    run_env = {**env, "CALBRIDGE_CONSOLE_PASSWORD": PASSWORD}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calbridge",
                "serve",
                "--workers",
                "0",
                "--port",
                str(port),
                "--metrics-path",
                "/metrics",
                "--console-path",
                "/console",
                "--log-level",
                "WARNING",
            ],
            env=run_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail("calbridge serve exited:\n" + log.read_text(errors="replace"))
            try:
                httpx.get(base + "/metrics", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("calbridge serve did not answer:\n" + log.read_text())
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_mounts_metrics_and_console_beside_the_receiver(served: str) -> None:
    """`calbridge serve --metrics-path /metrics --console-path /console`: the metrics and
    the console answer at their paths (the console with its own CSP, its links and
    cookie under /console), and the receiver still answers every other path."""
    metrics = httpx.get(served + "/metrics")
    assert metrics.status_code == 200
    assert _value(_samples(metrics.text), "calbridge_users", phase="shadow") == 1
    assert (
        metrics.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )

    home = httpx.get(served + "/console/")
    assert (home.status_code, home.headers["location"]) == (303, "/console/login")
    login = httpx.get(served + "/console/login")
    assert login.status_code == 200
    assert login.headers["content-security-policy"] == CONSOLE_CSP
    assert 'action="/console/login"' in login.text
    assert "path=/console" in login.headers["set-cookie"].lower()

    receiver = httpx.post(served + "/google", content=b"{}")  # no valid channel headers
    assert receiver.status_code not in (404, 405)
    assert httpx.get(served + "/nothing-here").status_code == 404

    # the receiver's answers are counted per provider and status; unknown paths as other
    counted = _samples(httpx.get(served + "/metrics").text)
    code = str(receiver.status_code)
    assert _value(counted, "calbridge_webhook_requests_total", provider="google", code=code) == 1
    assert _value(counted, "calbridge_webhook_requests_total", provider="other", code="404") == 1


def test_console_command_refuses_without_a_password_and_no_login_off_loopback(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`calbridge console` does not start without $CALBRIDGE_CONSOLE_PASSWORD, refuses
    --no-login on a non-loopback host and a store that does not exist (creating none),
    and --hash-password prints a hash that verifies."""
    from calbridge.console import verify_password

    base = {k: v for k, v in env.items() if k != "CALBRIDGE_CONSOLE_PASSWORD"}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "calbridge", "console", *args],
            env=base,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    nopass = run("--port", "0")
    assert nopass.returncode != 0
    assert "CALBRIDGE_CONSOLE_PASSWORD" in nopass.stderr
    open_door = run("--no-login", "--host", "0.0.0.0")
    assert open_door.returncode != 0
    assert "loopback" in open_door.stderr
    missing = tmp_path / "missing.db"
    base["CALBRIDGE_CONSOLE_PASSWORD"] = "pw"
    nodb = run("--database-url", f"sqlite:///{missing}", "--port", "0")
    assert nodb.returncode != 0
    assert str(missing) in nodb.stderr
    assert not missing.exists()  # the console never creates a store
    hashed = run("--hash-password", stdin="s3cret\n")
    assert hashed.returncode == 0, hashed.stderr
    made = hashed.stdout.strip()
    assert made.startswith("pbkdf2_sha256$600000$")
    assert verify_password("s3cret", Secret(made))
    assert not verify_password("s3cret ", Secret(made))


@pytest.mark.parametrize("command", [["console"], ["serve", "--metrics-path", "/metrics"]])
def test_missing_console_extra_names_it(command: list[str]) -> None:
    """Without prometheus-client (the console extra), `calbridge console` and `calbridge
    serve --metrics-path` say which extra to install instead of a traceback."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from calbridge.cli import main\n"
        f"main({[*command, '--port', '0']!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert 'install "calbridge[console]"' in done.stderr
    assert "Traceback" not in done.stderr
