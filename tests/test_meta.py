"""Meta-checks: the public surface is deliberate and every hook is documented and tested."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import calbridge
from calbridge._hookdocs import hook_names, render_hook_reference

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted (constants, classes, functions, as ruff sorts it) and every name exists."""
    assert calbridge.__all__ == sorted(
        set(calbridge.__all__), key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    for name in calbridge.__all__:
        assert hasattr(calbridge, name), name
    assert isinstance(calbridge.__version__, str)


def test_hook_reference_is_generated_and_current() -> None:
    """docs/plugins/hooks.md equals what `python -m calbridge._hookdocs` writes."""
    text = (ROOT / "docs" / "plugins" / "hooks.md").read_text(encoding="utf-8")
    assert text == render_hook_reference(), "run: python -m calbridge._hookdocs"


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented_with_example(hook: str) -> None:
    """Each hook has a docstring with Args/Returns or an Example."""
    fn = getattr(calbridge.hookspecs, hook)
    assert fn.__doc__
    assert "Example::" in fn.__doc__
    assert f"## `{hook}(" in render_hook_reference()


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_has_a_test(hook: str) -> None:
    """Some test module defines test_hook_<name> (datasette's rule)."""
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {
            n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
    assert f"test_hook_{hook}" in names


def test_plugins_use_only_the_public_api() -> None:
    """Built-in plugins never import calbridge's private modules."""
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
                if node.module == "calbridge":
                    mods += [f"calbridge.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for mod in mods:
                parts = mod.split(".")
                if parts[0] == "calbridge" and any(p.startswith("_") for p in parts[1:]):
                    offenders.append(f"{path.relative_to(ROOT)}: {mod}")
    assert offenders == []
