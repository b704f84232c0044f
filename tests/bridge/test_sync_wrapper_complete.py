"""SyncCalBridge has every public method and property of CalBridge, with the same
parameters, and the bridge's names are exported from ``calbridge`` (issue #19, item 7)."""

from __future__ import annotations

import datetime as dt
import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import calbridge
from calbridge import BridgeConfig, CalBridge, RoutingConfig, SyncCalBridge
from calbridge.router import NoRouteError

#: CalBridge names with no same-named SyncCalBridge member, and why
EXCLUDED = {
    "aclose": "SyncCalBridge.close (and its context manager) closes the bridge",
    "aroute": "the non-blocking form of route; SyncCalBridge.route blocks already",
}
#: SyncCalBridge names CalBridge has not, and why
SYNC_ONLY = {
    "close": "the blocking aclose",
    "async_bridge": "the CalBridge underneath",
    "run": "runs an awaitable (e.g. worker.run()) on the bridge's private loop",
}


def _public(cls: type) -> dict[str, object]:
    return {name: value for name, value in vars(cls).items() if not name.startswith("_")}


def _parameters(member: object) -> list[tuple[str, inspect._ParameterKind]]:
    if isinstance(member, classmethod | staticmethod):
        member = member.__func__
    assert callable(member)
    return [(p.name, p.kind) for p in inspect.signature(member).parameters.values()]


def test_sync_bridge_has_every_method_of_the_async_bridge() -> None:
    """Each public CalBridge member (methods, properties, class methods) is on
    SyncCalBridge, but for the listed exclusions; nothing else is added unlisted."""
    mine, theirs = _public(SyncCalBridge), _public(CalBridge)

    assert sorted(set(theirs) - set(EXCLUDED) - set(mine)) == []
    assert sorted(set(mine) - set(theirs) - set(SYNC_ONLY)) == []
    assert set(EXCLUDED) <= set(theirs), "an exclusion names no CalBridge member"


def test_sync_methods_take_the_same_parameters() -> None:
    """Same parameter names and kinds, in the same order; properties stay properties and
    class methods class methods."""
    mine, theirs = _public(SyncCalBridge), _public(CalBridge)

    for name in sorted(set(theirs) - set(EXCLUDED)):
        theirs_member, mine_member = theirs[name], mine[name]
        assert type(mine_member) is type(theirs_member), name
        if isinstance(theirs_member, property):
            continue
        assert _parameters(mine_member) == _parameters(theirs_member), name
        assert not inspect.iscoroutinefunction(mine_member), f"{name} must block"
        assert (mine_member.__doc__ or "").strip(), f"{name} has no docstring"


def test_bridge_names_are_exported_from_the_package() -> None:
    """``from calbridge import CalBridge, BridgeConfig, SyncCalBridge, RoutingConfig``."""
    from calbridge._blocking import SyncCalBridge as Blocking
    from calbridge._config import BridgeConfig as Config
    from calbridge._config import RoutingConfig as Routing
    from calbridge.bridge import CalBridge as Bridge

    assert (CalBridge, BridgeConfig, SyncCalBridge, RoutingConfig) == (
        Bridge,
        Config,
        Blocking,
        Routing,
    )
    assert {"CalBridge", "BridgeConfig", "SyncCalBridge", "RoutingConfig"} <= set(calbridge.__all__)


def test_importing_calbridge_does_not_load_the_bridge() -> None:
    """The bridge (store, SQLAlchemy engine setup, job queue) loads on first use only."""
    code = (
        "import sys, calbridge\n"
        "assert 'calbridge.bridge' not in sys.modules\n"
        "assert calbridge.CalBridge.__module__ == 'calbridge.bridge'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_sync_bridge_routes_pins_streams_and_closes(tmp_path: Path) -> None:
    """The new blocking members work end to end on an empty SQLite store."""
    config = BridgeConfig(database_url=f"sqlite:///{tmp_path / 'sync.db'}")
    window = calbridge.TimeRange(
        start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    )
    seen: list[object] = []

    with SyncCalBridge(config) as bridge:
        assert bridge.config is config
        assert bridge.store is bridge.async_bridge.store
        assert bridge.accounts() == []
        status = bridge.account_status("nobody")
        assert status["accounts"] == []
        assert status["route"] is None
        bridge.set_tenant("nobody", "acme")
        routing = bridge.store.routing.get_routing("nobody")
        assert routing is not None
        assert routing.data["tenant"] == "acme"
        with pytest.raises(NoRouteError, match="nobody"):
            list(bridge.events("nobody", "primary", window))
        with pytest.raises(NoRouteError, match="nobody"):
            bridge.explain_route("nobody")

        def on_batch(batch: object) -> None:  # a plain function: called in a thread
            seen.append(batch)

        assert bridge.on_changes(on_batch) is on_batch
        batch = SimpleNamespace(app_user_id=None)  # an app-wide batch goes out unfiltered
        bridge.run(bridge.async_bridge._deliver(batch))
        assert seen == [batch]
        assert bridge.changes is bridge.async_bridge.changes
        worker = bridge.worker(concurrency=1)
        assert bridge.run(worker.run_until_idle()) == 0
        assert bridge.subscribe("nobody") == {}
    assert not bridge._thread.is_alive()
