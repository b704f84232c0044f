"""An AST scan for database calls made on the event loop (used by test_async_boundary).

Inside every ``async def`` of ``calbridge/`` and ``plugins/`` it reports calls that run
a synchronous store, queue or engine call directly instead of through the one async
boundary, :func:`calbridge.store.offload` (or the job worker's own ``self._db``):

- a method of a store or queue: ``store.m(...)``, ``self.store.m(...)``,
  ``rt.queue.m(...)``, ``self._store.m(...)``, or of a store's repository:
  ``rt.store.events.m(...)``;
- an engine transaction: ``read(...)``, ``write(...)`` (``calbridge.store``'s);
- the app feed's ``feed.select`` / ``feed.record``;
- the runtime's and router's store reads: ``runtime.account``, ``runtime.user_facts``,
  ``runtime.update_routing``, ``router.route`` / ``router.explain``;
- ``runtime.session(<an id>)`` (the argument's name ends in ``id``): it reads the account;
- a synchronous function or method *of the same module* that does any of the above
  (followed transitively inside the module): ``self._after_write(...)``;
- ``asyncio.to_thread(<one of the above>, ...)`` or ``runtime.to_thread(...)``: the loop's
  shared default executor instead of calbridge's database pool.

A call that is awaited directly (``await queue.put(x)``) returns an awaitable and is not
a database call by itself.

Code inside a nested ``def`` or ``lambda`` is not on the loop when it is handed to
``offload`` and is judged as a synchronous function (it is flagged only where an async
function calls it by name). Arguments of ``offload(fn, ...)`` are references, not calls,
so ``offload(store.ids.get_ids, key)`` passes while ``offload(store.ids.get_ids(key))``
does not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["Finding", "scan_file", "scan_tree"]

#: receivers whose every method call is a database call
DB_RECEIVERS = frozenset({"store", "_store", "queue"})
#: store / queue attributes that are not database calls
PURE_METHODS = frozenset({"clock", "has_vault", "add_waker", "remove_waker"})
#: the store's repositories: every method call on ``store.<repository>`` is a database call
REPOSITORIES = frozenset(
    {"accounts", "credentials", "routing", "events", "ids", "channels", "audit_log", "feed", "keys"}
)
#: module-level functions that open an engine transaction
DB_FUNCTIONS = frozenset({"read", "write"})
#: (receiver's last name, method) pairs that read or write the store
DB_METHODS = frozenset(
    {
        ("feed", "select"),
        ("feed", "record"),
        ("_feed", "select"),
        ("_feed", "record"),
        ("runtime", "account"),
        ("runtime", "user_facts"),
        ("runtime", "update_routing"),
        ("rt", "account"),
        ("rt", "user_facts"),
        ("rt", "update_routing"),
        ("router", "route"),
        ("router", "explain"),
        ("migrator", "status"),
        ("bridge", "route"),
        ("bridge", "explain_route"),
    }
)
#: receivers whose ``session(x)`` reads the account when ``x`` is an id
SESSION_OWNERS = frozenset({"runtime", "rt"})

Finding = tuple[str, int, str]  # path, line, what


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _db_reference(func: ast.expr) -> str | None:
    """What database function ``func`` names (None: not one)."""
    if isinstance(func, ast.Name) and func.id in DB_FUNCTIONS:
        return func.id
    if isinstance(func, ast.Attribute):
        owner = _last_name(func.value)
        if owner in DB_RECEIVERS and func.attr not in PURE_METHODS:
            return f"{owner}.{func.attr}"
        if (
            isinstance(func.value, ast.Attribute)
            and owner in REPOSITORIES
            and _last_name(func.value.value) in DB_RECEIVERS
        ):
            return f"{_last_name(func.value.value)}.{owner}.{func.attr}"
        if owner is not None and (owner, func.attr) in DB_METHODS:
            return f"{owner}.{func.attr}"
    return None


def _direct(call: ast.Call) -> str | None:
    """What database call ``call`` is, judged on its own (None: not one)."""
    named = _db_reference(call.func)
    if named is not None:
        return f"{named}(...)"
    func = call.func
    if (
        isinstance(func, ast.Attribute)
        and func.attr == "session"
        and _last_name(func.value) in SESSION_OWNERS
        and call.args
        and (_last_name(call.args[0]) or "").lower().endswith("id")
    ):
        return f"{_last_name(func.value)}.session(<id>) (reads the account)"
    return None


def _to_thread(call: ast.Call, blocking: set[str]) -> str | None:
    """``to_thread(<database function>, ...)``: the wrong pool."""
    func = call.func
    if _last_name(func) != "to_thread" or not call.args:
        return None
    first = call.args[0]
    target = _db_reference(first)
    if target is None and isinstance(first, ast.Attribute | ast.Name):
        local = first.attr if isinstance(first, ast.Attribute) else first.id
        target = local if local in blocking else None
    if target is None and isinstance(func, ast.Attribute) and _last_name(func.value) != "asyncio":
        target = _last_name(first) or "a function"  # runtime.to_thread: always the database
    if target is None:
        return None
    return f"to_thread({target}, ...) (use calbridge.store.offload)"


def _local_name(call: ast.Call) -> str | None:
    """The module-local function a call names: ``f(...)``, ``self.f(...)``, ``cls.f(...)``."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in ("self", "cls")
    ):
        return func.attr
    return None


def _own_calls(fn: ast.AST) -> Iterator[ast.Call]:
    """Calls in ``fn``'s own body (not in nested functions, lambdas or classes), except
    calls awaited directly (they return awaitables)."""
    stack: list[ast.AST] = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
            stack.extend(ast.iter_child_nodes(node.value))
            awaited = node.value
            yield from (c for c in [awaited] if _last_name(c.func) == "to_thread")
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _blocking_locals(tree: ast.AST) -> set[str]:
    """Names of the module's synchronous functions that touch the database (transitively)."""
    sync = [f for f in _functions(tree) if isinstance(f, ast.FunctionDef)]
    calls = {f: list(_own_calls(f)) for f in sync}
    blocking: set[str] = {f.name for f in sync if any(_direct(c) for c in calls[f])}
    changed = True
    while changed:
        changed = False
        for f in sync:
            if f.name in blocking:
                continue
            if any(_local_name(c) in blocking for c in calls[f]):
                blocking.add(f.name)
                changed = True
    # a name that is also an async function of the module is ambiguous: skip it
    return blocking - {f.name for f in _functions(tree) if isinstance(f, ast.AsyncFunctionDef)}


def scan_file(path: Path, display: str | None = None) -> list[Finding]:
    """Database calls on the event loop in one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    blocking = _blocking_locals(tree)
    name = display or str(path)
    found: list[Finding] = []
    for fn in _functions(tree):
        if not isinstance(fn, ast.AsyncFunctionDef):
            continue
        for call in _own_calls(fn):
            what = _direct(call) or _to_thread(call, blocking)
            if what is None and _local_name(call) in blocking:
                what = f"{_local_name(call)}(...) (reaches the database)"
            if what is not None:
                found.append((name, call.lineno, what))
    return sorted(found)


def scan_tree(root: Path, folders: Iterable[str]) -> list[Finding]:
    """Database calls on the event loop in every Python file under ``folders``."""
    found: list[Finding] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            found.extend(scan_file(path, path.relative_to(root).as_posix()))
    return found


if __name__ == "__main__":  # pragma: no cover - a report for humans
    here = Path(__file__).resolve().parents[1]
    for file, line, what in scan_tree(here, ["calbridge", "plugins"]):
        print(f"{file}:{line}: {what}")
