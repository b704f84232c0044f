"""Fixtures of the console tests: real sandboxes over loopback (those of
``tests/test_cli_migrate.py``), a store populated through real OAuth connections, the
``calbridge console`` command as a subprocess, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.console import hash_password
from calbridge.migration import Migrator
from calbridge.router import Phase
from calbridge.sandbox import LoopbackServer, World
from tests.test_cli_migrate import connect, env, sandbox

__all__ = ["PASSWORD", "Console", "connect", "env", "sandbox"]

PASSWORD = "correct horse battery staple"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Console:
    """A running ``calbridge console`` subprocess."""

    def __init__(self, base_url: str, env: dict[str, str], log: Path) -> None:
        self.base_url = base_url
        self.env = env
        self.log = log


@pytest.fixture
async def population(
    env: dict[str, str], sandbox: tuple[World, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Users in several phases, connected through the sandboxes' real OAuth redirects:
    ann (google + cronofy) in shadow, bob (google only) held on legacy, dave
    (google + cronofy) stuck at dual (cutover refused: parity not clean for a day) and
    erin (google) not under migration."""
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    try:
        for user in ("ann", "dave"):
            await connect(bridge, user, "google", f"{user}@example.com")
            await connect(bridge, user, "cronofy", f"{user}@example.com")
        await connect(bridge, "bob", "google", "bob@example.com")
        await connect(bridge, "erin", "google", "erin@example.com")
        migrator = Migrator(bridge.runtime)
        started = await migrator.bulk(["ann", "bob", "dave"], Phase.SHADOW)
        assert started.moved == ("ann", "dave")
        assert started.held == ("bob",)
        assert await migrator.move("dave", Phase.DUAL)
    finally:
        await bridge.aclose()
    return {"ann": "shadow", "bob": "legacy", "dave": "dual", "erin": ""}


@pytest.fixture
def console(env: dict[str, str], population: dict[str, str], tmp_path: Path) -> Iterator[Console]:
    """``calbridge console`` on a free loopback port, logging to ``tmp_path``."""
    port = _free_port()
    run_env = {
        **env,
        "CALBRIDGE_CONSOLE_PASSWORD": hash_password(PASSWORD, iterations=1000),
        "CALBRIDGE_CONSOLE_SESSION_KEY": "test-session-key-" + "x" * 32,
    }
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calbridge",
                "console",
                "--port",
                str(port),
                "--no-cookie-secure",
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
                pytest.fail("calbridge console exited:\n" + log.read_text(errors="replace"))
            try:
                if httpx.get(base + "/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("calbridge console did not answer:\n" + log.read_text())
            time.sleep(0.2)
        yield Console(base, run_env, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) under Selenium.

    Skipped without them locally; under CI=true (``make test`` installs them through
    ``scripts/ensure-chromium.sh``) their absence fails the test."""
    binary, driver_path = CHROMIUM
    if not (shutil.which(binary) and shutil.which(driver_path)):
        message = "chromium and chromium-driver are not installed (make test installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the suite runs as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(10)  # a submitted form's next page may take a moment
    try:
        yield driver
    finally:
        driver.quit()
