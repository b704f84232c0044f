"""Packaging: dependency floors that are tested, extras, metadata, entry points, an sdist
that builds and tests (issue #19, item 5)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

from calbridge._manager import DEFAULT_PLUGINS, PluginHost, _own_entry_points

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT: dict[str, Any] = PYPROJECT["project"]
#: what a library user does not need: servers, the CLI, PostgreSQL, the test kit's pytest
NOT_IN_CORE = {"click", "rich", "starlette", "uvicorn", "httptools", "psycopg", "pytest"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None
    return match.group(0).lower()


def _floor(requirement: str) -> str | None:
    match = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
    return match.group(1) if match else None


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in (ROOT / "constraints-lowest.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.lower()] = version
    return pins


def _same(floor: str, pin: str) -> bool:
    def parts(v: str) -> list[int]:
        out = [int(p) for p in v.split(".")]
        return out + [0] * (4 - len(out))

    return parts(floor) == parts(pin)


def test_every_floor_is_pinned_by_the_lowest_versions_job() -> None:
    """Each dependency has a floor; the lowest-versions job installs exactly that floor."""
    pins = _pins()
    extras: dict[str, list[str]] = PROJECT["optional-dependencies"]
    requirements = [*PROJECT["dependencies"]]
    for name in ("cli", "server", "sandbox", "testing"):
        requirements += extras[name]

    for requirement in requirements:
        name, floor = _name(requirement), _floor(requirement)
        assert floor is not None, f"{requirement!r} has no floor"
        assert name in pins, f"{name} is missing from constraints-lowest.txt"
        assert _same(floor, pins[name]), f"{name}: floor {floor}, lowest job installs {pins[name]}"
    assert _floor(next(r for r in PROJECT["dependencies"] if _name(r) == "cattrs")) == "25.2"
    assert "make test-lowest" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_extras_keep_servers_and_cli_out_of_the_library() -> None:
    """The library's dependencies hold no server, CLI, driver or pytest; each is an extra,
    and make (demo, test) installs them all."""
    core = {_name(r) for r in PROJECT["dependencies"]}
    extras: dict[str, list[str]] = PROJECT["optional-dependencies"]

    assert not core & NOT_IN_CORE
    assert {"cli", "server", "sandbox", "postgres", "testing", "all"} <= set(extras)
    assert {_name(r) for r in extras["cli"]} >= {"click", "rich"}
    assert {_name(r) for r in extras["server"]} >= {"starlette", "uvicorn"}
    assert {_name(r) for r in extras["sandbox"]} >= {"starlette", "uvicorn"}
    assert {_name(r) for r in extras["testing"]} >= {"pytest", "pytest-asyncio"}
    assert {_name(r) for r in extras["otel"]} == {"opentelemetry-api"}
    assert "opentelemetry-api" not in core  # spans are a no-op without it
    assert {_name(r) for r in extras["console"]} >= {"jinja2", "itsdangerous", "prometheus-client"}
    assert extras["all"] == ["calbridge[cli,server,sandbox,postgres,testing,otel,console,caldav]"]
    assert '-e ".[all]"' in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_license_urls_and_classifiers() -> None:
    """An MIT LICENSE file shipped with the distribution, project URLs and classifiers."""
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")

    assert license_text.startswith("MIT License")
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert PROJECT["urls"]
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert "Typing :: Typed" in PROJECT["classifiers"]
    installed = importlib.metadata.metadata("calbridge")
    assert installed["License-Expression"] == "MIT"


def test_library_works_without_the_extras(tmp_path: Path) -> None:
    """With click, rich, starlette, uvicorn, psycopg and pytest unimportable, calbridge and
    calbridge.testing import, the plugins load and a bridge runs on SQLite."""
    script = f"""
import asyncio, sys
BLOCKED = {sorted(NOT_IN_CORE | {"_pytest", "pytest_asyncio"})!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import calbridge, calbridge.testing
from calbridge.bridge import CalBridge
from calbridge._config import BridgeConfig
assert {{"cronofy", "google", "outlook"}} <= set(calbridge.get_plugin_host().providers())
async def main():
    harness = await calbridge.testing.memory_harness()
    assert await harness.provider.list_calendars(harness.session)
    await harness.provider.http.aclose()
    bridge = CalBridge(BridgeConfig(database_url="sqlite:///{tmp_path}/lib.db"))
    try:
        assert await bridge.accounts(None) == []
    finally:
        await bridge.aclose()
asyncio.run(main())
print("library ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "library ok"


def test_builtins_are_registered_through_the_entry_point_group() -> None:
    """calbridge's own distribution lists every built-in plugin in the ``calbridge``
    entry-point group, and the host loads them from there."""
    declared = PYPROJECT["project"]["entry-points"]["calbridge"]
    own = _own_entry_points()

    assert declared == {name: name for name in DEFAULT_PLUGINS}
    assert set(own) == set(DEFAULT_PLUGINS)
    host = PluginHost(entry_points=True, strict=True).load()
    for name in DEFAULT_PLUGINS:
        assert host.pm.get_plugin(name) is own[name].load()


def test_sdist_builds_and_its_tests_run(tmp_path: Path) -> None:
    """The sdist carries what `make test` needs, and tests run from the unpacked sdist."""
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (archive,) = tmp_path.glob("calbridge-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (tree,) = (tmp_path / "x").iterdir()
    for needed in (
        "LICENSE",
        "Makefile",
        "pyproject.toml",
        "constraints-lowest.txt",
        "scripts/with-postgres.sh",
        ".ci/run",
        "tests/conftest.py",
        "plugins/calbridge_cronofy/__init__.py",
        "examples/calbridge-example/pyproject.toml",
    ):
        assert (tree / needed).is_file(), f"the sdist lacks {needed}"

    ran = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_models.py",
            "tests/test_contract_memory.py",
        ],
        cwd=tree,
        env={"PYTHONPATH": f"{tree}:{tree / 'plugins'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert " passed" in ran.stdout
    assert (
        str(tree)
        in subprocess.run(
            [sys.executable, "-P", "-c", "import calbridge; print(calbridge.__file__)"],
            cwd=tree,
            env={"PYTHONPATH": f"{tree}:{tree / 'plugins'}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
