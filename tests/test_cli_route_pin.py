"""`calbridge route USER --pin PROVIDER` refuses before it writes (issue #19 item 3): a pin
to a provider the user has no active account with would cut the user off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.router import NoRouteError
from calbridge.sandbox import LoopbackServer, World

from .test_cli_migrate import cli, connect, env, sandbox

__all__ = ["env", "sandbox"]


async def test_a_refused_pin_changes_nothing(
    env: dict[str, str], sandbox: tuple[World, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    await connect(bridge, "bob", "google", "bob@example.com")
    with pytest.raises(NoRouteError, match="no active cronofy account"):
        await bridge.pin("bob", "cronofy")
    await bridge.aclose()

    refused = run_cli(env, "route", "bob", "--pin", "cronofy")
    assert refused.returncode == 1
    assert "no active cronofy account" in refused.stderr
    routed = cli(env, "route", "bob", "--json")
    assert routed["provider"] == "google"
    assert routed["source"] != "pin"
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    routing = bridge.store.routing.get_routing("bob")
    assert routing is None or "pin" not in routing.data
    assert not [
        e
        for e in bridge.store.audit_log.audit_entries(app_user_id="bob")
        if e.action == "route.pin"
    ]
    await bridge.aclose()

    # a pin to a provider the user is connected to is taken
    pinned = run_cli(env, "route", "bob", "--pin", "google", "--json")
    assert pinned.returncode == 0, pinned.stderr
    assert cli(env, "route", "bob", "--json")["source"] == "pin"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
