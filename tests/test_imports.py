"""Import layering, checked on the AST (issue 20, point 5).

Every import of every module of ``calbridge/`` and ``plugins/`` is read (at the top of a
module, inside a function, under ``if TYPE_CHECKING:``), relative imports resolved and
``from package import name`` taken as the submodule when ``name`` is one. On that:

- core (``calbridge.**``) imports no plugin package (``calbridge_cronofy``, ...: every
  top-level package under ``plugins/``), not even inside a function or for types, and names
  none in an ``importlib.import_module`` call; built-ins are loaded by the plugin host from
  ``DEFAULT_PLUGINS`` strings, as third-party plugins are from entry points;
- plugins import only public calbridge names. ``tests/test_meta.py``
  (``test_plugins_use_only_the_public_api``) rejects private *modules* named by the import
  (``calbridge._http``, ``from calbridge import _x``); here the names a plugin takes from a
  public module are checked too (``from calbridge.sandbox import _world``, a private
  function of a public module), also for the example third-party plugin in ``examples/``;
- no sandbox imports the client code it emulates. ``tests/sandbox/test_sandbox_imports.py``
  holds the plugin sandboxes to their own package (no client module of their plugin, no
  other plugin); here the same is asked of the sandbox toolkit and the sandboxes towards
  the client toolkit: no module of ``calbridge.sandbox`` or ``calbridge_*.sandbox`` imports
  ``calbridge.toolkit`` (the OAuth client and authorised client the sandboxes are tested
  against);
- no import cycles among calbridge's modules (core and plugins): the module graph counts
  imports inside functions (they still run, and hide cycles) and leaves out those under
  ``if TYPE_CHECKING:``; its strongly connected components are cycles. The cycles there
  are today are in ``ALLOWED_CYCLES``, each with its reason: a new cycle fails, and so does
  an entry no longer needed (the list only shrinks).
- ``tests/test_layering.py`` keeps SQL in the store.

``python -m tests.test_imports`` prints the counts, the cycles and the package graph;
``python -m tests.test_imports --write-docs`` rewrites the graph in docs/architecture.md
(``test_architecture_doc_shows_the_current_graph`` fails when it is stale).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Literal, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
EXAMPLES = ROOT / "examples"
DOC = ROOT / "docs" / "architecture.md"

Scope = Literal["module", "function", "type_checking"]


class Import(NamedTuple):
    """One imported module, as the importing module sees it."""

    line: int
    #: the absolute name of the module (``from a import b``: ``a.b`` when that is a module
    #: of the scanned tree, else ``a``)
    target: str
    #: ``from a import b``: ``b`` (a submodule or an attribute of ``a``); else ``""``
    name: str
    #: at the top of the module (class bodies included), inside a function or lambda, or
    #: under ``if TYPE_CHECKING:`` (never run; wins over ``function``)
    scope: Scope


class Module(NamedTuple):
    name: str
    path: Path
    is_package: bool


# --- reading the tree -------------------------------------------------------------------


def _walk_modules(folder: Path, import_root: Path) -> Iterator[Module]:
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(import_root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        yield Module(".".join(parts), path, is_package)


@cache
def core_modules() -> tuple[Module, ...]:
    """Every module of ``calbridge/``."""
    return tuple(_walk_modules(ROOT / "calbridge", ROOT))


@cache
def plugin_packages() -> frozenset[str]:
    """The top-level packages under ``plugins/`` (built-in plugins, one per folder)."""
    return frozenset(
        p.name for p in PLUGINS.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    )


@cache
def plugin_modules() -> tuple[Module, ...]:
    """Every module of every built-in plugin (``plugins/<package>/``)."""
    return tuple(
        module
        for package in sorted(plugin_packages())
        for module in _walk_modules(PLUGINS / package, PLUGINS)
    )


@cache
def example_modules() -> tuple[Module, ...]:
    """The example third-party plugins' modules (``examples/<dist>/<package>/``)."""
    found: list[Module] = []
    for dist in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        for package in sorted(p for p in dist.iterdir() if (p / "__init__.py").is_file()):
            found.extend(_walk_modules(package, dist))
    return tuple(found)


@cache
def known_modules() -> frozenset[str]:
    """Every module name of the scanned tree (core, plugins, examples)."""
    return frozenset(m.name for m in (*core_modules(), *plugin_modules(), *example_modules()))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(package: str, level: int, module: str | None) -> str:
    if not level:
        return module or ""
    base = package.split(".") if package else []
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def imports_of(
    name: str, source: str, *, is_package: bool = False, known: Iterable[str] | None = None
) -> list[Import]:
    """Every import of the module ``name`` (its source given), in source order.

    ``known`` names the modules that exist (default: the scanned tree), to tell
    ``from a import b`` of a submodule ``a.b`` from that of an attribute.
    """
    modules = known_modules() if known is None else frozenset(known)
    package = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name, "", scope) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                target = sub if sub in modules else base
                found.append(Import(node.lineno, target, alias.name, scope))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                visit(statement, "type_checking")
            for statement in node.orelse:
                visit(statement, scope)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner: Scope = "type_checking" if scope == "type_checking" else "function"
            for child in ast.iter_child_nodes(node):
                visit(child, inner)
        else:
            for child in ast.iter_child_nodes(node):
                visit(child, scope)

    visit(ast.parse(source, filename=name), "module")
    return sorted(found, key=lambda i: i.line)


def _imports(module: Module) -> list[Import]:
    return imports_of(
        module.name, module.path.read_text(encoding="utf-8"), is_package=module.is_package
    )


@cache
def core_imports() -> Mapping[str, tuple[Import, ...]]:
    return {m.name: tuple(_imports(m)) for m in core_modules()}


@cache
def plugin_imports() -> Mapping[str, tuple[Import, ...]]:
    return {m.name: tuple(_imports(m)) for m in plugin_modules()}


def _top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


# --- rule 1: core imports no plugin -----------------------------------------------------

_DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


def plugin_imports_in_core(
    name: str, source: str, *, plugins: frozenset[str], is_package: bool = False
) -> list[str]:
    """Where the core module ``name`` imports a plugin package (``line: module``): any
    import at any scope, and ``importlib.import_module("<plugin>...")`` with a literal."""
    found = [
        f"{i.line}: {i.target}"
        for i in imports_of(name, source, is_package=is_package)
        if _top(i.target) in plugins
    ]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0]
        if (
            called in _DYNAMIC_IMPORTS
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and _top(first.value) in plugins
        ):
            found.append(f"{node.lineno}: {called}({first.value!r})")
    return found


def test_core_imports_no_plugin() -> None:
    """No module of calbridge/ imports a plugin package, at any scope."""
    plugins = plugin_packages()
    assert {"calbridge_cronofy", "calbridge_google", "calbridge_outlook"} <= plugins
    offending = [
        f"{m.path.relative_to(ROOT)}:{hit}"
        for m in core_modules()
        for hit in plugin_imports_in_core(
            m.name, m.path.read_text(encoding="utf-8"), plugins=plugins, is_package=m.is_package
        )
    ]
    assert not offending, "core imports a plugin:\n" + "\n".join(offending)


def test_plugin_import_in_core_is_caught() -> None:
    """A planted import of a plugin is found wherever it hides."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import calbridge_google._wire as wire\n"
        "if TYPE_CHECKING:\n"
        "    from calbridge_outlook import OutlookProvider\n"
        "def load():\n"
        "    import importlib\n"
        "    from calbridge_caldav._dav import propfind\n"
        "    return importlib.import_module('calbridge_cronofy.sandbox')\n"
        "def other():\n"
        "    return importlib.import_module(name)  # not a literal: the plugin host's way\n"
        "PLUGINS = ('calbridge_polling',)  # a string is no import\n"
    )
    plugins = frozenset({"calbridge_google", "calbridge_outlook", "calbridge_caldav"})
    assert plugin_imports_in_core("calbridge.x", source, plugins=plugins) == [
        "2: calbridge_google._wire",
        "4: calbridge_outlook",
        "7: calbridge_caldav._dav",
    ]
    plugins |= {"calbridge_cronofy", "calbridge_polling"}
    assert plugin_imports_in_core("calbridge.x", source, plugins=plugins)[-1] == (
        "8: import_module('calbridge_cronofy.sandbox')"
    )


# --- rule 2: plugins use only public calbridge names -------------------------------------


def private_calbridge_names(name: str, source: str, *, is_package: bool = False) -> list[str]:
    """Private names a plugin module takes from calbridge (``line: module.name``), those
    ``tests/test_meta.py`` does not see: a ``_name`` imported from a public module."""
    found: list[str] = []
    for i in imports_of(name, source, is_package=is_package):
        if not i.name or _top(i.target) != "calbridge":
            continue
        if i.name.startswith("_") and not (i.name.startswith("__") and i.name.endswith("__")):
            origin = i.target.removesuffix("." + i.name)  # a submodule's package
            found.append(f"{i.line}: {origin}.{i.name}")
    return found


def test_plugins_take_only_public_names_from_calbridge() -> None:
    """No plugin (nor the example third-party plugin) imports ``_name`` from calbridge."""
    modules = (*plugin_modules(), *example_modules())
    assert any(m.name.startswith("calbridge_example") for m in modules)
    offending = [
        f"{m.path.relative_to(ROOT)}:{hit}"
        for m in modules
        for hit in private_calbridge_names(
            m.name, m.path.read_text(encoding="utf-8"), is_package=m.is_package
        )
    ]
    assert not offending, "private calbridge names in plugins:\n" + "\n".join(offending)


def test_private_name_from_a_public_module_is_caught() -> None:
    """What test_meta misses is found here; public names and dunders pass."""
    source = (
        "import calbridge\n"
        "from calbridge.sandbox import _world, World\n"
        "from calbridge.toolkit import AuthorizedClient\n"
        "from calbridge import __version__\n"
        "def f():\n"
        "    from calbridge.store import _private_helper\n"
        "from calbridge_google import _wire  # its own package: not calbridge's\n"
    )
    known = {"calbridge", "calbridge.sandbox", "calbridge.sandbox._world", "calbridge.toolkit"}
    assert [h.split(": ")[1] for h in private_calbridge_names("calbridge_google._x", source)] == [
        "calbridge.sandbox._world",
        "calbridge.store._private_helper",
    ]
    # the resolver sees the submodule: ``from calbridge.sandbox import _world`` is a module
    assert imports_of("calbridge_google._x", source, known=known)[1].target == (
        "calbridge.sandbox._world"
    )


# --- rule 3: sandboxes do not import the client toolkit ---------------------------------

CLIENT_TOOLKIT = "calbridge.toolkit"


def _is_sandbox(module: str) -> bool:
    """``calbridge.sandbox`` and ``<plugin>.sandbox``, with their modules."""
    parts = module.split(".")
    return len(parts) > 1 and parts[1] == "sandbox"


def client_toolkit_imports(imports: Iterable[Import]) -> list[str]:
    """Imports of ``calbridge.toolkit`` (``line: module``), at any scope."""
    return [
        f"{i.line}: {i.target}"
        for i in imports
        if i.target == CLIENT_TOOLKIT or i.target.startswith(CLIENT_TOOLKIT + ".")
    ]


def test_sandboxes_do_not_import_the_client_toolkit() -> None:
    """The sandbox toolkit and every plugin sandbox emulate the side the toolkit talks to."""
    graph = {**core_imports(), **plugin_imports()}
    sandboxes = sorted(name for name in graph if _is_sandbox(name))
    assert "calbridge.sandbox" in sandboxes
    assert {"calbridge_cronofy.sandbox", "calbridge_google.sandbox"} <= set(sandboxes)
    offending = [
        f"{name}:{hit}" for name in sandboxes for hit in client_toolkit_imports(graph[name])
    ]
    assert not offending, "sandbox modules import the client toolkit:\n" + "\n".join(offending)


def test_client_toolkit_import_is_caught() -> None:
    """Relative, nested and from-imports of the toolkit are found; other core is fine."""
    known = {"calbridge", "calbridge.toolkit", "calbridge.toolkit._oauth", "calbridge.sandbox"}
    source = (
        "from calbridge.sandbox import World\n"
        "def f():\n"
        "    from ..toolkit import _oauth\n"
        "from calbridge import toolkit\n"
    )
    imports = imports_of("calbridge.sandbox._x", source, known=known)
    assert client_toolkit_imports(imports) == [
        "3: calbridge.toolkit._oauth",
        "4: calbridge.toolkit",
    ]
    assert _is_sandbox("calbridge.sandbox._oauth")
    assert _is_sandbox("calbridge_outlook.sandbox._app")
    assert not _is_sandbox("calbridge.toolkit._oauth")
    assert not _is_sandbox("calbridge.cli._sandbox")


# --- rule 4: no import cycles -----------------------------------------------------------

#: cycles tolerated for now (each a strongly connected component of the runtime import
#: graph, by its modules), with why each is still there; the test fails on a new cycle and
#: on a line that no longer matches one. Empty: the last two (bridge <-> _blocking,
#: store._engine <-> store._migrate) were broken, so any cycle fails.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


def import_graph(
    imports: Mapping[str, Iterable[Import]], *, internal: frozenset[str] | None = None
) -> dict[str, set[str]]:
    """Module -> the modules of ``internal`` (default: the keys) it imports at run time
    (at the top or inside a function; never the ``TYPE_CHECKING`` ones)."""
    nodes = frozenset(imports) if internal is None else internal
    graph: dict[str, set[str]] = {name: set() for name in imports}
    for name, found in imports.items():
        for i in found:
            if i.scope == "type_checking":
                continue
            target = i.target
            while target and target not in nodes:  # ``import a.b.attr``: the module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work.append((root, iter(sorted(graph.get(root, ())))))
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return sorted(found, key=sorted)


def _describe(component: frozenset[str], imports: Mapping[str, Iterable[Import]]) -> str:
    """A cycle's modules and the imports inside it (``a -> b (line, scope)``)."""
    edges = sorted(
        {
            f"  {name}:{i.line} -> {i.target} ({i.scope})"
            for name in sorted(component)
            for i in imports[name]
            if i.scope != "type_checking" and i.target in component and i.target != name
        }
    )
    return "{" + ", ".join(sorted(component)) + "}\n" + "\n".join(edges)


@cache
def runtime_graph() -> dict[str, set[str]]:
    """The scanned tree's runtime import graph (core and plugins)."""
    return import_graph({**core_imports(), **plugin_imports()})


def test_no_new_import_cycles() -> None:
    """The runtime import graph (function-level imports included) has no cycle but those
    allowed, and every allowed one still exists as it is listed."""
    imports = {**core_imports(), **plugin_imports()}
    found = cycles(runtime_graph())
    new = [c for c in found if c not in ALLOWED_CYCLES]
    assert not new, "import cycles (move the shared code down, or pass it in):\n" + "\n".join(
        _describe(c, imports) for c in new
    )
    stale = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not stale, f"ALLOWED_CYCLES entries that are no longer cycles (remove them): {stale}"


def test_cycles_are_found_with_function_imports_and_without_type_checking() -> None:
    """A cycle closed inside a function counts; one closed under TYPE_CHECKING does not;
    ``from package import submodule`` and relative imports resolve to the submodule."""
    known = {"app", "app.a", "app.b", "app.c", "app.d"}
    sources = {
        "app.a": "from . import b\n",
        "app.b": "def f():\n    from .c import thing\n",
        "app.c": "import app.a\nfrom typing import TYPE_CHECKING\n",
        "app.d": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.a import x\n",
        "app": "from .a import x\nfrom . import d\n",
    }
    imports = {
        name: imports_of(name, src, is_package=name == "app", known=known)
        for name, src in sources.items()
    }
    assert [i.scope for i in imports["app.b"]] == ["function"]
    assert [i.scope for i in imports["app.d"]] == ["module", "type_checking"]
    assert cycles(import_graph(imports)) == [frozenset({"app.a", "app.b", "app.c"})]
    # the same cycle closed under TYPE_CHECKING is none
    imports["app.b"] = imports_of(
        "app.b", "if TYPE_CHECKING:\n    from .c import thing\n", known=known
    )
    assert cycles(import_graph(imports)) == []
    # a package and its submodule importing each other is a cycle
    imports["app.d"] = imports_of("app.d", "from app import y\n", known=known)
    assert cycles(import_graph(imports)) == [frozenset({"app", "app.d"})]


def test_allow_list_catches_new_and_stale_cycles() -> None:
    """The allow-list check fails on a cycle not listed and on a listed one that is gone."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}
    allowed = {frozenset({"a", "b"}), frozenset({"x", "y"})}
    found = cycles(graph)
    assert [c for c in found if c not in allowed] == [frozenset({"c", "d"})]
    assert [c for c in allowed if c not in found] == [frozenset({"x", "y"})]


# --- the numbers and the package graph (docs/architecture.md) ---------------------------


def scope_counts(imports: Mapping[str, Iterable[Import]]) -> dict[Scope, int]:
    """How many imported names are at the top, inside functions, under TYPE_CHECKING."""
    counts: dict[Scope, int] = {"module": 0, "function": 0, "type_checking": 0}
    for found in imports.values():
        for i in found:
            counts[i.scope] += 1
    return counts


def function_import_statements(imports: Mapping[str, Iterable[Import]]) -> int:
    """Import statements inside functions (a ``from a import b, c`` is one)."""
    return len(
        {(n, i.line) for n, found in imports.items() for i in found if i.scope == "function"}
    )


def package_of(module: str) -> str:
    """The node of the package graph a module belongs to: ``calbridge.<sub>`` for a
    subpackage of calbridge, ``calbridge`` (the core modules) for its top-level modules,
    the plugin package for a plugin (``calbridge_google.sandbox`` on its own)."""
    parts = module.split(".")
    if parts[0] == "calbridge":
        if len(parts) > 1 and f"calbridge.{parts[1]}" in _core_subpackages():
            return f"calbridge.{parts[1]}"
        return "calbridge"
    if len(parts) > 1 and parts[1] == "sandbox":
        return f"{parts[0]}.sandbox"
    return parts[0]


@cache
def _core_subpackages() -> frozenset[str]:
    return frozenset(
        ".".join(m.path.relative_to(ROOT).parts[:2])
        for m in core_modules()
        if len(m.path.relative_to(ROOT).parts) > 2
    )


def package_graph() -> dict[str, dict[str, Scope]]:
    """Package -> package -> ``module`` when some import of it runs at load time, else
    ``function`` (only imports inside functions); TYPE_CHECKING imports left out."""
    imports = {**core_imports(), **plugin_imports()}
    nodes = frozenset(imports)
    graph: dict[str, dict[str, Scope]] = defaultdict(dict)
    for name, found in imports.items():
        source = package_of(name)
        deps = graph[source]  # every package is a node, also one importing nothing
        for i in found:
            if i.scope == "type_checking":
                continue
            target = i.target
            while target and target not in nodes:
                target = target.rpartition(".")[0]
            if not target:
                continue
            dest = package_of(target)
            if dest == source:
                continue
            if deps.get(dest) != "module":
                deps[dest] = i.scope
    return dict(graph)


BEGIN = "<!-- import graph: generated by `python -m tests.test_imports --write-docs` -->"
END = "<!-- end of import graph -->"


def render_package_graph() -> str:
    """The package graph as the Markdown table docs/architecture.md shows."""
    graph = package_graph()
    lines = [
        BEGIN,
        "",
        "| package | imports when loaded | imports only inside functions |",
        "|---|---|---|",
    ]

    def names(deps: Iterable[str]) -> str:
        return ", ".join(f"`{d}`" for d in sorted(deps)) or "-"

    for package in sorted(graph, key=lambda p: (_top(p) != "calbridge", p)):
        deps = graph[package]
        eager = [d for d, s in deps.items() if s == "module"]
        lazy = [d for d, s in deps.items() if s == "function"]
        lines.append(f"| `{package}` | {names(eager)} | {names(lazy)} |")
    lines += ["", END]
    return "\n".join(lines)


def _doc_section(text: str) -> str | None:
    start = text.find(BEGIN)
    end = text.find(END)
    if start == -1 or end == -1:
        return None
    return text[start : end + len(END)]


def test_architecture_doc_shows_the_current_graph() -> None:
    """docs/architecture.md's package graph is what the imports are now."""
    section = _doc_section(DOC.read_text(encoding="utf-8"))
    assert section is not None, f"docs/architecture.md lacks the {BEGIN!r} section"
    assert section == render_package_graph(), "run: python -m tests.test_imports --write-docs"


def main(argv: list[str]) -> int:
    """Print the numbers and cycles; ``--write-docs`` rewrites the doc's graph."""
    core = core_imports()
    plugins = plugin_imports()
    for label, imports in (("calbridge", core), ("plugins", plugins)):
        counts = scope_counts(imports)
        print(
            f"{label}: {len(imports)} modules; imported names: {counts}; "
            f"import statements inside functions: {function_import_statements(imports)}"
        )
    found = cycles(runtime_graph())
    print(f"cycles: {len(found)}")
    for component in found:
        print(_describe(component, {**core, **plugins}))
    if "--write-docs" in argv:
        text = DOC.read_text(encoding="utf-8")
        section = _doc_section(text)
        assert section is not None, f"add {BEGIN} ... {END} to {DOC}"
        DOC.write_text(text.replace(section, render_package_graph()), encoding="utf-8")
    else:
        print(render_package_graph())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
