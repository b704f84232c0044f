"""Plugin loading: built-ins, entry points, env switches, conflicts, the providers CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

import calbridge
from calbridge import PluginHost, errors
from calbridge.testing import MemoryProvider, fresh_plugin_host, memory_plugin

DATA = Path(__file__).parent / "data" / "plugins"


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> object:
    """Put one fake plugin directory (with its dist-info) on sys.path."""

    def add(name: str) -> None:
        monkeypatch.syspath_prepend(str(DATA / name))

    return add


def test_builtins_load_without_entry_points() -> None:
    """Built-in plugins register by dotted path; nothing needs installing."""
    host = fresh_plugin_host()
    assert set(calbridge.DEFAULT_PLUGINS) <= set(host.plugin_names())


def test_nothing_loads_at_import_time() -> None:
    """Importing calbridge loads no plugin module."""
    code = (
        "import sys, calbridge, calbridge.testing;"
        "print([m for m in sys.modules if m.startswith('calbridge_')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_third_party_entry_point_appears(on_path: object) -> None:
    """A plugin installed through the calbridge entry-point group is loaded with its source."""
    on_path("ok")  # type: ignore[operator]
    host = PluginHost(entry_points=True, strict=True)
    info = host.providers()["example"]
    assert info.source == "calbridge-example 1.0"
    assert info.plugin == "example"
    assert info.aliases == ("ex",)
    assert host.provider_class("ex") is info.cls


def test_broken_plugin_is_reported_and_skipped(on_path: object) -> None:
    """A plugin that fails to import warns and is skipped; the rest still load."""
    on_path("broken")  # type: ignore[operator]
    on_path("ok")  # type: ignore[operator]
    host = PluginHost(entry_points=True, strict=False)
    with pytest.warns(UserWarning, match="broken"):
        providers = host.providers()
    assert "example" in providers
    assert "ModuleNotFoundError" in host.failures["broken"]


def test_broken_plugin_is_an_error_in_strict_mode(on_path: object) -> None:
    """Strict mode (used by tests) turns a broken plugin into PluginError."""
    on_path("broken")  # type: ignore[operator]
    with pytest.raises(errors.PluginError, match="broken"):
        PluginHost(entry_points=True, strict=True).load()


def test_duplicate_names_name_both_plugins(on_path: object) -> None:
    """Two plugins registering one name give an error naming both."""
    on_path("twins")  # type: ignore[operator]
    host = PluginHost(entry_points=True, strict=True)
    with pytest.raises(errors.ProviderConflictError) as info:
        host.providers()
    assert set(info.value.plugins) == {"twin_a", "twin_b"}
    assert "twin_a" in str(info.value)
    assert "twin_b" in str(info.value)


def test_allow_list_and_block_list(on_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """CALBRIDGE_LOAD_PLUGINS allow-lists entry points; CALBRIDGE_DISABLE_PLUGINS blocks."""
    on_path("twins")  # type: ignore[operator]
    monkeypatch.setenv("CALBRIDGE_LOAD_PLUGINS", "twin_a")
    assert "twin" in PluginHost(entry_points=True, strict=True).providers()
    monkeypatch.delenv("CALBRIDGE_LOAD_PLUGINS")
    monkeypatch.setenv("CALBRIDGE_DISABLE_PLUGINS", "twin_b")
    host = PluginHost(entry_points=True, strict=True)
    assert host.providers()["twin"].plugin == "twin_a"


def test_trace_plugins_writes_hook_calls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CALBRIDGE_TRACE_PLUGINS prints hook calls to stderr."""
    monkeypatch.setenv("CALBRIDGE_TRACE_PLUGINS", "1")
    host = fresh_plugin_host(memory_plugin)
    host.make_change_source(
        MemoryProvider(http=httpx.AsyncClient(), settings=calbridge.ProviderSettings()),
        None,
    )
    assert "make_change_source" in capsys.readouterr().err


def test_register_validates_names() -> None:
    """Names are lower-case identifiers; non-Provider classes are refused."""

    class Bad(calbridge.Provider):
        name: ClassVar[str] = "Bad Name"

        async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
            return []

    class Plugin:
        @calbridge.hookimpl
        def register_providers(self, register: calbridge.ProviderRegistrar) -> None:
            register(Bad)

    class NotAProvider:
        @calbridge.hookimpl
        def register_providers(self, register: calbridge.ProviderRegistrar) -> None:
            register(dict)  # type: ignore[arg-type]

    with pytest.raises(errors.PluginError, match="lower-case"):
        fresh_plugin_host(Plugin()).providers()
    with pytest.raises(errors.PluginError, match=r"not a calbridge\.Provider"):
        fresh_plugin_host(NotAProvider()).providers()


def test_unknown_provider_lists_known_ones(plugin_host: PluginHost) -> None:
    """ProviderNotFoundError says which providers are loaded."""
    with pytest.raises(errors.ProviderNotFoundError, match="memory"):
        plugin_host.provider_class("nope")
    assert plugin_host.provider_class("mem") is MemoryProvider


def test_hook_register_providers(plugin_host: PluginHost) -> None:
    """register_providers: the reference plugin's provider is registered as test source."""
    info = plugin_host.providers()["memory"]
    assert info.cls is MemoryProvider
    assert info.source == "test"


def test_hook_make_change_source(plugin_host: PluginHost) -> None:
    """make_change_source: polling answers last, for providers nobody else claims."""
    provider = MemoryProvider(
        http=httpx.AsyncClient(), settings=calbridge.ProviderSettings(options={"poll_interval": 60})
    )
    source = plugin_host.make_change_source(provider, None)
    assert source.kind == "poll"
    assert source.interval_seconds == 60

    class PushPlugin:
        @calbridge.hookimpl
        def make_change_source(
            self, provider: calbridge.Provider, callback_url: str | None
        ) -> calbridge.ChangeSource | None:
            if provider.name == "memory" and callback_url:
                return calbridge.ChangeSource(kind="push", reason="memory pushes")
            return None

    plugin_host.register(PushPlugin(), name="push")
    assert plugin_host.make_change_source(provider, "https://app/hook").kind == "push"
    assert plugin_host.make_change_source(provider, None).kind == "poll"


def test_hook_account_status_changed(plugin_host: PluginHost) -> None:
    """account_status_changed reaches every implementation."""
    seen: list[tuple[str, str]] = []

    class Listener:
        @calbridge.hookimpl
        def account_status_changed(
            self, account: calbridge.Account, old_status: calbridge.AccountStatus, reason: str
        ) -> None:
            seen.append((account.status, reason))

    plugin_host.register(Listener(), name="listener")
    acct = calbridge.Account(
        app_user_id="u",
        provider="memory",
        provider_account_id="a",
        status=calbridge.AccountStatus.NEEDS_REAUTH,
    )
    plugin_host.notify_account_status_changed(acct, calbridge.AccountStatus.ACTIVE, "invalid_grant")
    assert seen == [("needs_reauth", "invalid_grant")]


def _cli(*args: str, extra_path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "calbridge", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_cli_providers_json_shows_third_party_and_skips_broken() -> None:
    """`calbridge providers --json` lists name, source and capabilities; broken is reported."""
    out = _cli(
        "providers", "--json", extra_path=os.pathsep.join([str(DATA / "ok"), str(DATA / "broken")])
    )
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["example"]["source"] == "calbridge-example 1.0"
    assert rows["example"]["capabilities"]["write"] is False
    assert "broken" in out.stderr


def test_cli_providers_conflict_fails_naming_both() -> None:
    """A name conflict makes the command fail with both plugin names."""
    out = _cli("providers", "--json", extra_path=str(DATA / "twins"))
    assert out.returncode != 0
    assert "twin_a" in out.stderr
    assert "twin_b" in out.stderr
