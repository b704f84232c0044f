"""Docs a user can live in (issue #19, item 7): the site builds strictly with an API
reference generated from the docstrings, and the configuration, routing and migration
references say what the code does."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs

from calbridge import BridgeConfig, RoutingConfig
from calbridge.migration import Migrator

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _nav() -> list[str]:
    """Every page named in mkdocs.yml's nav (``- Title: page.md`` lines)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*-\s[^:\n]+:\s*(\S+\.md)\s*$", text, flags=re.MULTILINE)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def test_make_docs_builds_the_site_strictly(tmp_path: Path) -> None:
    """`make docs` is `mkdocs build --strict`; the build passes, every page is in the nav
    and the API reference is rendered from the docstrings (installed by `make test`)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^docs:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert target is not None, "Makefile has no docs target"
    assert "mkdocs build --strict" in target.group(1)
    groups: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))[
        "dependency-groups"
    ]
    assert {"include-group": "docs"} in groups["test"], "make test must install the docs tools"

    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert 'not included in the "nav"' not in done.stderr, done.stderr
    bridge = (site / "api" / "bridge" / "index.html").read_text(encoding="utf-8")
    for anchor in (
        "calbridge.CalBridge.create_event",
        "calbridge.SyncCalBridge.create_event",
        "calbridge.SyncCalBridge.events",
    ):
        assert f'id="{anchor}"' in bridge, anchor
    pages = {
        "config": "calbridge.BridgeConfig.from_file",
        "migration": "calbridge.migration.Migrator.check_parity_many",
        "provider": "calbridge.provider.Provider",
        "hookspecs": "calbridge.hookspecs.register_providers",
        "testing": "calbridge.testing.ProviderContract",
        "errors": "calbridge.errors.CalbridgeError",
        "models": "calbridge.models.EventDraft",
        "store": "calbridge.store.offload",
        "jobs": "calbridge.jobs.Worker",
    }
    for page, anchor in pages.items():
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        assert f'id="{anchor}"' in html, f"api/{page}.md lacks {anchor}"


def test_every_page_is_in_the_nav() -> None:
    """The configuration and routing references and each API page are reachable."""
    nav = set(_nav())
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}

    assert {"configuration.md", "routing.md", "api/index.md", "api/bridge.md"} <= nav
    assert sorted(pages - nav) == []


def test_configuration_reference_lists_every_key_default_and_variable() -> None:
    """Each BridgeConfig and RoutingConfig field is a row with its default; every
    environment variable the configuration reads is named."""
    text = _read("configuration.md")
    core = _section(text, "## `[calbridge]`")
    routing = _section(text, "## `[calbridge.routing]`")

    for field in attrs.fields(BridgeConfig):
        if field.name in ("providers", "routing"):
            continue
        assert f"| `{field.name}` |" in core, field.name
    for field in attrs.fields(RoutingConfig):
        row = next((r for r in routing.splitlines() if r.startswith(f"| `{field.name}` |")), "")
        assert row, field.name
        default: Any = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, float) and default.is_integer():
            shown = str(int(default))
        elif isinstance(default, str):
            shown = f'"{default}"'
        else:
            shown = "{}" if default == {} else str(default)
        assert f"`{shown}`" in row, (row, shown)
    variables = set(re.findall(r"CALBRIDGE_[A-Z_<>]+", _source("calbridge/_config.py")))
    variables |= set(re.findall(r'"(CALBRIDGE_[A-Z_]+)"', _source("calbridge/_manager.py")))
    for variable in variables:
        if variable.endswith("_"):  # the per-provider prefix, written with <NAME>
            continue
        assert variable in text, variable
    assert "CALBRIDGE_<NAME>_CLIENT_ID" in text
    assert "CALBRIDGE_<NAME>_CLIENT_SECRET" in text


def _source(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


def test_routing_reference_gives_the_rules_in_order_with_defaults() -> None:
    """docs/routing.md names the steps in the router's order and each policy rule, in
    RoutingConfig.rules() order, with its key and default."""
    text = _read("routing.md")
    steps = ["**Pin.**", "**Migration phase**", "**Policy rules**", "**Default**", "**Legacy"]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)

    every_rule = RoutingConfig(tenants={"t": "x"}, email_domains={"d": "x"}, percent=1).rules()
    names = [rule.name for rule in every_rule]
    assert names == ["prefer-when-authorized", "tenant", "email-domain", "percent-cohort"]
    table = _section(text, "## Policy rules and their defaults")
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", r).group(1) for r in rows] == names  # type: ignore[union-attr]
    for field in attrs.fields(RoutingConfig):
        assert f"`{field.name}" in text, field.name
    assert "`true` (**on**)" in rows[0]
    assert 'target_provider` (default `"cronofy"`)' in text
    assert "default `5`" in text


def test_migration_guide_covers_the_python_api() -> None:
    """docs/migration.md has a "From Python" section whose example calls only real
    Migrator methods, and that names every public one."""
    section = _section(_read("migration.md"), "## From Python")
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code is not None
    tree = ast.parse(code.group(1))
    called = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "migrator"
    }
    public = {
        name
        for name in vars(Migrator)
        if not name.startswith("_") and callable(vars(Migrator)[name])
    }

    assert called <= public, called - public
    assert {"cohort", "plan", "enroll_many", "bulk", "check_parity_many", "move"} <= called
    for name in public:
        assert f"`{name}(" in section or f"migrator.{name}" in section, name
