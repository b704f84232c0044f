"""No provider sandbox imports the client code it emulates.

A sandbox stands in for the provider's service: were it to call or convert with the
plugin's own client modules (``calbridge_google._wire``, ``calbridge_outlook._convert``
...), a bug there would be shared by both sides and no test would catch it. Every
``import`` of every module under ``plugins/calbridge_*/sandbox/`` (module level or inside a
function, absolute or relative) must resolve inside that sandbox package, ``calbridge``,
a third-party library or one of :data:`SHARED_FORMAT`: never to its plugin's client
modules, nor to another plugin.

:data:`SHARED_FORMAT` lists the provider's own notations that both sides must read and
write identically and that hold no client behaviour (Graph's Windows time-zone names and
``dateTimeTimeZone`` values, its ``patternedRecurrence``): pure functions importing
nothing of calbridge, held to that here. One copy of each: two identical copies (as there
were) shared every bug anyway. The sandboxes' fidelity to the providers is checked against
the official SDKs and the providers' documented examples, not against the client.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
SANDBOXES = sorted(p for p in PLUGINS.glob("calbridge_*/sandbox") if p.is_dir())
#: a plugin's notation modules its sandbox shares (module -> what it holds)
SHARED_FORMAT: dict[str, str] = {
    "calbridge_outlook._tz": "Windows zone names, dateTimeTimeZone values",
    "calbridge_outlook._recurrence": "patternedRecurrence <-> RRULE",
}


def _module_name(path: Path, root: Path) -> str:
    """``calbridge_outlook.sandbox._app`` for ``plugins/calbridge_outlook/sandbox/_app.py``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PLUGINS) -> list[tuple[int, str]]:
    """Every module ``path`` (below the import root ``root``) imports, as absolute names,
    with the line it is imported on."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                anchor = base[: len(base) - (node.level - 1)]
                module = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from . import _tz`` names modules, not attributes
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def test_every_builtin_sandbox_is_scanned() -> None:
    """The scan finds the three built-in sandboxes (a moved folder would pass silently)."""
    assert {p.parent.name for p in SANDBOXES} >= {
        "calbridge_cronofy",
        "calbridge_google",
        "calbridge_outlook",
    }


@pytest.mark.parametrize("sandbox", SANDBOXES, ids=lambda p: p.parent.name)
def test_sandbox_imports_no_client_module(sandbox: Path) -> None:
    """Only the sandbox's own package among the plugins' modules."""
    own = f"{sandbox.parent.name}.sandbox"
    offending = []
    for path in sorted(sandbox.rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if not top.startswith("calbridge_"):
                continue
            if module == own or module.startswith(own + "."):
                continue
            if module in SHARED_FORMAT or module.rpartition(".")[0] in SHARED_FORMAT:
                continue
            offending.append(f"{path.relative_to(PLUGINS)}:{line}: {module}")
    assert not offending, "sandbox modules import client code:\n" + "\n".join(offending)


def test_the_scan_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    """The resolver: ``from .. import x`` inside a function is the plugin's ``x``."""
    probe = tmp_path / "calbridge_outlook" / "sandbox" / "_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import calbridge_outlook._wire\n"
        "def f():\n"
        "    from .._tz import zone\n"
        "    from .. import _recurrence\n"
        "    from ._views import delta\n"
    )
    modules = {m for _, m in imported_modules(probe, tmp_path)}
    assert {
        "calbridge_outlook._wire",
        "calbridge_outlook._tz",
        "calbridge_outlook._recurrence",
        "calbridge_outlook.sandbox._views",
    } <= modules


@pytest.mark.parametrize("module", sorted(SHARED_FORMAT))
def test_shared_format_modules_hold_no_client_code(module: str) -> None:
    """A shared notation module imports nothing of calbridge or any plugin (so it cannot
    reach the client's behaviour), and is not itself a sandbox module."""
    path = PLUGINS.joinpath(*module.split(".")).with_suffix(".py")
    assert path.is_file(), module
    reached = [
        f"{line}: {name}"
        for line, name in imported_modules(path)
        if name.split(".")[0] == "calbridge" or name.split(".")[0].startswith("calbridge_")
    ]
    assert not reached, f"{module} imports calbridge code:\n" + "\n".join(reached)
