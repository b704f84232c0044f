"""The store is the only code that speaks SQL (issue 20, points 2 and 5).

An AST scan of every module of ``calbridge/`` and ``plugins/`` outside
``calbridge/store/``: none may import SQLAlchemy or a database driver (anywhere: at the
top, inside a function, under ``TYPE_CHECKING``), import the store's tables
(``calbridge.store.schema``, ``metadata``) or its statement helpers, or send raw SQL
(``exec_driver_sql``). Code outside the store asks a repository (``store.events``,
``store.channels``, ...; see docs/store.md) and holds at most a transaction handle
(``calbridge.store.Connection``) to pass on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("calbridge", "plugins")
#: the store itself
STORE = "calbridge/store/"

#: modules that may still speak SQL, each with its reason. Shrink it: move the SQL into a
#: repository, then drop the line (the test fails on a line that is no longer needed).
ALLOWED: dict[str, str] = {}

#: top-level packages of database access
SQL_PACKAGES = frozenset({"sqlalchemy", "alembic", "psycopg", "psycopg2", "sqlite3"})
#: names of ``calbridge.store`` that build or run statements (only the store uses them)
STORE_SQL_NAMES = frozenset({"schema", "metadata", "dialect_insert", "database_now", "PG_NOW_SQL"})
#: methods that send SQL text to a connection
RAW_SQL_METHODS = frozenset({"exec_driver_sql"})


def _modules() -> Iterator[tuple[str, Path]]:
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(STORE):
                yield rel, path


def _package(rel: str) -> list[str]:
    parts = rel.removesuffix(".py").split("/")
    if parts[0] == "plugins":
        parts = parts[1:]  # plugins/calbridge_x is the package calbridge_x
    return parts[:-1]  # a module's package; an __init__.py's package is its folder


def _absolute(rel: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(rel)
    if node.level > 1:
        base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def violations(rel: str, source: str) -> list[str]:
    """What in one module speaks SQL (``line: what``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=rel)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in SQL_PACKAGES:
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(rel, node)
            if module.split(".")[0] in SQL_PACKAGES:
                found.append(f"{node.lineno}: from {module} import ...")
            elif module == "calbridge.store.schema":
                found.append(f"{node.lineno}: from {module} import ... (the store's tables)")
            elif module == "calbridge.store":
                found.extend(
                    f"{node.lineno}: from calbridge.store import {a.name}"
                    for a in node.names
                    if a.name in STORE_SQL_NAMES
                )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RAW_SQL_METHODS
        ):
            found.append(f"{node.lineno}: .{node.func.attr}(...)")
    return found


def _allowed(rel: str) -> str | None:
    return next((key for key in ALLOWED if rel == key or rel.startswith(key)), None)


def test_no_sql_outside_the_store() -> None:
    """No module outside calbridge/store (and the allow-list) speaks SQL."""
    unexpected: list[str] = []
    needed: set[str] = set()
    for rel, path in _modules():
        found = violations(rel, path.read_text(encoding="utf-8"))
        if not found:
            continue
        key = _allowed(rel)
        if key is not None:
            needed.add(key)
            continue
        unexpected.extend(f"{rel}:{line}" for line in found)
    assert not unexpected, (
        "SQL outside calbridge/store (add a repository method instead):\n" + "\n".join(unexpected)
    )
    stale = sorted(set(ALLOWED) - needed)
    assert not stale, "allow-list entries that no longer speak SQL (remove them): " + ", ".join(
        stale
    )


def test_the_scan_finds_what_it_should() -> None:
    """Imports anywhere in a module, relative ones resolved, and raw SQL are found."""
    source = (
        "import sqlalchemy as sa\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.engine import Engine\n"
        "def f(conn):\n"
        "    from ..store import schema, offload\n"
        "    from ..store.schema import accounts\n"
        "    conn.exec_driver_sql('PRAGMA x')\n"
        "    from ..store import Connection, Store\n"
        "    import psycopg\n"
    )
    lines = [v.split(":")[0] for v in violations("calbridge/sync/_x.py", source)]
    assert sorted(lines, key=int) == ["1", "4", "6", "7", "8", "10"]
    assert violations("calbridge/sync/_x.py", "from .store import schema\n") == []
    assert violations("calbridge/_x.py", "from .store import schema\n") == [
        "1: from calbridge.store import schema"
    ]
