"""`calbridge migrate enroll`, plan's under_migration and `route --explain` as a user runs
them (subprocesses), with prefer-when-authorized switched on."""

from __future__ import annotations

from pathlib import Path

import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.sandbox import LoopbackServer, World

from .test_cli_migrate import cli, connect, env, sandbox

__all__ = ["env", "sandbox"]


@pytest.fixture
def prefer_env(env: dict[str, str]) -> dict[str, str]:
    """The CLI suite's environment with the seed rule prefer-when-authorized switched on."""
    config = Path(env["CALBRIDGE_CONFIG"])
    text = config.read_text(encoding="utf-8")
    on = text.replace("prefer_when_authorized = false", "prefer_when_authorized = true")
    config.write_text(on, encoding="utf-8")
    return env


async def test_enroll_holds_users_on_legacy_and_route_explains(
    prefer_env: dict[str, str],
    sandbox: tuple[World, LoopbackServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = prefer_env
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    await connect(bridge, "ann", "google", "ann@example.com")
    await connect(bridge, "ann", "cronofy", "ann@example.com")
    await connect(bridge, "bob", "google", "bob@example.com")
    await bridge.aclose()

    assert cli(env, "route", "ann", "--json")["source"] == "policy:prefer-when-authorized"
    plan = {r["app_user_id"]: r for r in cli(env, "migrate", "plan", "--json")}
    assert not plan["ann"]["under_migration"]
    assert "not under migration" in plan["ann"]["detail"]

    enrolled = cli(env, "migrate", "enroll", "--user", "ann", "--json")
    assert enrolled["moved"] == ["ann"]
    routed = cli(env, "route", "ann", "--json")
    assert (routed["provider"], routed["source"]) == ("google", "migration")
    explained = cli(env, "route", "ann", "--explain")
    assert "migration phase legacy" in explained
    assert "prefer-when-authorized would pick cronofy" in explained
    assert cli(env, "migrate", "status", "--user", "ann", "--json")[0]["under_migration"]

    # bob is refused by start (not re-authorised) but held on legacy from now on
    started = cli(env, "migrate", "start", "--json")
    assert started["moved"] == ["ann"]
    assert [(r["user"], r["guards"][0]["kind"]) for r in started["refused"]] == [
        ("bob", "no-authorization")
    ]
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    await connect(bridge, "bob", "cronofy", "bob@example.com")
    await bridge.aclose()
    routed = cli(env, "route", "bob", "--json")
    assert (routed["provider"], routed["source"]) == ("google", "migration")
    again = cli(env, "migrate", "enroll", "--json")
    assert sorted(again["already"]) == ["ann", "bob"]
