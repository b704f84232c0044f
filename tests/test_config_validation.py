"""Strict configuration: unknown keys, provider names, types and time zones are errors that
name the field and the nearest valid name (issue #19, item 2)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from calbridge._config import BridgeConfig, RoutingConfig
from calbridge.errors import ConfigurationError
from calbridge.models import Event, EventDraft, EventTime
from calbridge.provider import ProviderSettings
from calbridge.testing import fresh_plugin_host, memory_plugin

CALBRIDGE = str(Path(sys.executable).parent / "calbridge")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"calbridge": {"pol_interval": 30}},
            "[calbridge] unknown key 'pol_interval' (did you mean 'poll_interval'?)",
        ),
        (
            {"calbridge": {"poll_interval": "often"}},
            "[calbridge] poll_interval must be a positive number of seconds",
        ),
        ({"calbridge": {"poll_interval": True}}, "[calbridge] poll_interval must be"),
        ({"calbridge": {"reconcile_interval": -1}}, "[calbridge] reconcile_interval must be"),
        ({"calbridge": {"public_url": 8000}}, "[calbridge] public_url must be a URL string"),
        (
            {"calbridg": {}},
            "config file: unknown table 'calbridg' (did you mean 'calbridge'?)",
        ),
        (
            {"calbridge": {"routing": {"percnt": 10}}},
            "[calbridge.routing] unknown key 'percnt' (did you mean 'percent'?)",
        ),
        (
            {"calbridge": {"routing": {"percent": 150}}},
            "[calbridge.routing] percent must be a number from 0 to 100, not 150",
        ),
        (
            {"calbridge": {"routing": {"prefer_when_authorized": "yes"}}},
            "[calbridge.routing] prefer_when_authorized must be true or false",
        ),
        (
            {"providers": {"google": {"clientid": "x"}}},
            "[providers.google] unknown key 'clientid' (did you mean 'client_id'?)",
        ),
        (
            {"providers": {"google": {"client_id": 12}}},
            "[providers.google] client_id must be a string, not 12",
        ),
        (
            {"providers": {"google": {"options": "fast"}}},
            "[providers.google] options must be a table",
        ),
        (
            {"providers": {"google": {"options": {"default_time_zone": "Europe/Pariss"}}}},
            "[providers.google] options.default_time_zone = 'Europe/Pariss' is not an IANA "
            "time zone (did you mean 'Europe/Paris'?)",
        ),
        (
            {"providers": {"cronofy": {"options": {"default_tzid": "america/new_york"}}}},
            "(did you mean 'America/New_York'?)",
        ),
    ],
)
def test_from_mapping_names_the_field_and_the_nearest_name(
    data: dict[str, Any], expected: str
) -> None:
    """Each mistake raises ConfigurationError naming the field and suggesting the fix."""
    with pytest.raises(ConfigurationError) as info:
        BridgeConfig.from_mapping(data)

    assert expected in str(info.value)


def test_constructing_in_code_checks_types_too(tmp_path: Path) -> None:
    """Validators run on construction, not only when reading a file; a correct file with
    every kind of value still loads."""
    with pytest.raises(ConfigurationError, match="poll_interval must be a positive number"):
        BridgeConfig(poll_interval="often")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl must be a number of seconds"):
        RoutingConfig(ttl="soon")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"options\.tzid = 'Mars/Olympus'"):
        BridgeConfig(providers={"x": ProviderSettings(options={"tzid": "Mars/Olympus"})})
    path = tmp_path / "calbridge.toml"
    path.write_text(
        """
[calbridge]
database_url = "sqlite:///x.db"
target_provider = "cronofy"
poll_interval = 60
[calbridge.routing]
percent = 10
tenants = { acme = "cronofy" }
[providers.google]
client_id = "abc"
options = { default_time_zone = "Europe/Paris", page_size = 50 }
""",
        encoding="utf-8",
    )

    config = BridgeConfig.from_file(path)

    assert config.poll_interval == 60
    assert config.routing.percent == 10
    assert config.providers["google"].options["default_time_zone"] == "Europe/Paris"


def test_unknown_provider_names_suggest_the_loaded_one() -> None:
    """Provider names are checked against the loaded plugins (names and aliases)."""
    host = fresh_plugin_host(memory_plugin)
    known = host.provider_names()
    assert {"cronofy", "google", "outlook", "memory", "mem"} <= known

    typo_table = BridgeConfig.from_mapping({"providers": {"gogle": {"client_id": "x"}}})
    with pytest.raises(ConfigurationError) as info:
        typo_table.check_providers(known)
    assert "[providers.gogle] names no loaded provider (did you mean 'google'?)" in str(info.value)

    typo_target = BridgeConfig(target_provider="cronofyy")
    with pytest.raises(ConfigurationError) as info:
        typo_target.check_providers(known)
    assert "target_provider = 'cronofyy' names no loaded provider (did you mean 'cronofy'?)" in (
        str(info.value)
    )

    typo_rule = BridgeConfig(routing=RoutingConfig(tenants={"acme": "outlok"}))
    with pytest.raises(ConfigurationError, match=r"did you mean 'outlook'\?"):
        typo_rule.check_providers(known)

    BridgeConfig(target_provider="mem", providers={"google": ProviderSettings()}).check_providers(
        known
    )


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            lambda: EventDraft(
                start=dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC),  # type: ignore[arg-type]
                end=EventTime.zoned(dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
            ),
            "EventDraft.start takes a calbridge.EventTime, not datetime",
        ),
        (
            lambda: EventDraft(
                start=EventTime.floating(dt.datetime(2026, 3, 1, 9)),
                end=dt.datetime(2026, 3, 1, 10),  # type: ignore[arg-type]
            ),
            "EventTime.floating(value)",
        ),
        (
            lambda: Event(
                id="e",
                calendar_id="c",
                provider="p",
                start=dt.date(2026, 3, 1),  # type: ignore[arg-type]
                end=dt.date(2026, 3, 2),  # type: ignore[arg-type]
            ),
            "Event.start takes a calbridge.EventTime, not date",
        ),
    ],
)
def test_raw_datetime_for_an_event_time_says_how_to_wrap_it(build: Any, expected: str) -> None:
    """A datetime where an EventTime belongs is a TypeError telling which wrapper to use."""
    with pytest.raises(TypeError) as info:
        build()

    assert expected in str(info.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALBRIDGE_")}
    return subprocess.run(
        [CALBRIDGE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("pol_interval = 30\n", "unknown key 'pol_interval' (did you mean 'poll_interval'?)"),
        ("poll_interval = 'often'\n", "poll_interval must be a positive number of seconds"),
        (
            "[providers.google]\noptions = { default_time_zone = 'Europe/Pariss' }\n",
            "(did you mean 'Europe/Paris'?)",
        ),
    ],
)
def test_cli_reports_config_mistakes_without_a_traceback(
    tmp_path: Path, extra: str, expected: str
) -> None:
    """``calbridge accounts --config`` on a real SQLite store: one clear error line."""
    config = tmp_path / "calbridge.toml"
    config.write_text(
        f"[calbridge]\ndatabase_url = 'sqlite:///{tmp_path}/cb.db'\n{extra}", encoding="utf-8"
    )

    done = _cli("accounts", "--config", str(config), cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    config.write_text(
        f"[calbridge]\ndatabase_url = 'sqlite:///{tmp_path}/cb.db'\npoll_interval = 30\n",
        encoding="utf-8",
    )
    created = _cli("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    fixed = _cli("accounts", "--json", "--config", str(config), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "[]"


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_sandbox_serve_bad_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    """``calbridge sandbox serve --port 99999`` is a usage error (exit 2), not a traceback."""
    done = _cli("sandbox", "serve", "--port", port, cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--port'" in done.stderr
    assert "Traceback" not in done.stderr


def test_sandbox_serve_port_taken_is_a_usage_error(tmp_path: Path) -> None:
    """A port that cannot be bound (not an address of this machine) is a usage error."""
    done = _cli("sandbox", "serve", "--host", "192.0.2.1", "--port", "9", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "cannot listen on 192.0.2.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_provider_table_stops_a_command_before_it_opens_the_store(
    tmp_path: Path,
) -> None:
    db = tmp_path / "never.db"
    config = tmp_path / "calbridge.toml"
    config.write_text(
        f'[calbridge]\ndatabase_url = "sqlite:///{db}"\n[providers.gogle]\nclient_id = "x"\n',
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "calbridge", "accounts", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1
    assert "did you mean 'google'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not db.exists()
