"""The migration, routing and accounts commands, as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from calbridge._config import BridgeConfig
from calbridge.bridge import CalBridge
from calbridge.sandbox import LoopbackServer, World, build_app, serve_in_thread
from calbridge.store.vault import generate_key
from calbridge.testing import fresh_plugin_host

GOOGLE = ("cli-google.apps.googleusercontent.com", "GOCSPX-cli")
CRONOFY = ("cli-cronofy", "cli-cronofy-secret")


@pytest.fixture
def sandbox() -> Iterator[tuple[World, LoopbackServer]]:
    world = World()
    world.add_application(*GOOGLE)
    world.add_application(*CRONOFY)
    with serve_in_thread(build_app(world, dict(fresh_plugin_host().sandbox_factories()))) as srv:
        yield world, srv


@pytest.fixture
def env(tmp_path: Path, sandbox: tuple[World, LoopbackServer]) -> dict[str, str]:
    """A config file pointing at the loopback sandboxes; secrets only in the environment."""
    _, srv = sandbox
    base = srv.base_url
    config = tmp_path / "calbridge.toml"
    config.write_text(f"""
[calbridge]
database_url = "sqlite:///{tmp_path / "cli.db"}"
redirect_base = "http://127.0.0.1:8000/oauth"

[calbridge.routing]
prefer_when_authorized = false

[providers.google]
client_id = "{GOOGLE[0]}"
client_secret_env = "TEST_GOOGLE_SECRET"
base_urls = {{ api = "{base}/google", accounts = "{base}/google", oauth2 = "{base}/google" }}

[providers.cronofy]
client_id = "{CRONOFY[0]}"
client_secret_env = "TEST_CRONOFY_SECRET"
base_urls = {{ api = "{base}/cronofy", app = "{base}/cronofy" }}
""")
    return {
        **os.environ,
        "CALBRIDGE_CONFIG": str(config),
        "CALBRIDGE_KEYS": f"k1:{generate_key()}",
        "TEST_GOOGLE_SECRET": GOOGLE[1],
        "TEST_CRONOFY_SECRET": CRONOFY[1],
    }


def cli(env: dict[str, str], *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "calbridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 3), out.stderr[-2000:]
    return json.loads(out.stdout) if "--json" in args else out.stdout


async def connect(bridge: CalBridge, user: str, provider: str, email: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(await bridge.connect_url(user, provider, login_hint=email))
    params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
    await bridge.complete_connect(provider, params)


async def test_migrate_route_and_accounts_commands(
    env: dict[str, str], sandbox: tuple[World, LoopbackServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan lists who waits; start/diff/cutover/rollback act with guards; route explains."""
    world, srv = sandbox
    for key in ("CALBRIDGE_CONFIG", "CALBRIDGE_KEYS", "TEST_GOOGLE_SECRET", "TEST_CRONOFY_SECRET"):
        monkeypatch.setenv(key, env[key])
    bridge = CalBridge(BridgeConfig.from_file(env["CALBRIDGE_CONFIG"]))
    await connect(bridge, "ann", "google", "ann@example.com")
    await connect(bridge, "ann", "cronofy", "ann@example.com")
    await connect(bridge, "bob", "google", "bob@example.com")
    await bridge.aclose()

    accounts = cli(env, "accounts", "--json")
    assert sorted((a["app_user_id"], a["provider"]) for a in accounts) == [
        ("ann", "cronofy"),
        ("ann", "google"),
        ("bob", "google"),
    ]
    assert all(a["phase"] == "legacy" for a in accounts)

    plan = {r["app_user_id"]: r["readiness"] for r in cli(env, "migrate", "plan", "--json")}
    assert plan == {"ann": "ready", "bob": "waiting_reauth"}

    dry = cli(env, "migrate", "start", "--user", "ann", "--dry-run", "--json")
    assert dry["moved"] == ["ann"]
    assert cli(env, "migrate", "status", "--user", "ann", "--json")[0]["phase"] == "legacy"
    started = cli(env, "migrate", "start", "--json")  # every user: bob is refused
    assert started["moved"] == ["ann"]
    assert [r["user"] for r in started["refused"]] == ["bob"]

    srv.call(lambda: world.clock.advance(600))  # Cronofy learns the native calendar
    diff = cli(env, "migrate", "diff", "--user", "ann", "--json")
    assert diff[0]["clean"] is True

    refused = cli(env, "migrate", "cutover", "--user", "ann", "--json")
    assert refused["moved"] == []
    assert "skips a phase" in refused["refused"][0]["reason"]

    route = cli(env, "route", "ann", "--json")
    assert (route["provider"], route["source"]) == ("google", "migration")
    explained = cli(env, "route", "ann", "--explain")
    assert "migration phase shadow" in explained

    assert cli(env, "migrate", "rollback", "--user", "ann", "--json")["moved"] == ["ann"]
    assert cli(env, "route", "ann", "--pin", "cronofy", "--json")["provider"] == "cronofy"
    unpinned = cli(env, "route", "ann", "--unpin", "--json")
    assert (unpinned["provider"], unpinned["source"]) == ("google", "migration")  # phase legacy
