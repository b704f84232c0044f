"""Render the hook reference (docs/plugins/hooks.md) from calbridge.hookspecs docstrings."""

from __future__ import annotations

import inspect

from . import hookspecs

__all__ = ["hook_names", "render_hook_reference"]

HEADER = """# Hook reference

<!-- Generated from calbridge/hookspecs.py by `python -m calbridge._hookdocs`; do not edit. -->

Implement hooks with `@calbridge.hookimpl` in a module exposed through the `calbridge`
entry-point group (see [writing a provider](writing-a-provider.md)).
"""


def hook_names() -> list[str]:
    """Every hook defined in calbridge.hookspecs, in source order."""
    out = []
    for name, obj in vars(hookspecs).items():
        if callable(obj) and hasattr(obj, f"{hookspecs.PROJECT}_spec"):
            out.append(name)
    return out


def render_hook_reference() -> str:
    """The Markdown text of the hook reference."""
    parts = [HEADER]
    for name in hook_names():
        fn = getattr(hookspecs, name)
        opts = getattr(fn, f"{hookspecs.PROJECT}_spec")
        params = ", ".join(inspect.signature(fn).parameters)
        flags = [k for k in ("firstresult", "historic") if opts.get(k)]
        parts.append(f"\n## `{name}({params})`\n")
        if flags:
            parts.append(f"\n*{', '.join(flags)}*\n")
        parts.append("\n```text\n" + inspect.cleandoc(fn.__doc__ or "") + "\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parent.parent / "docs" / "plugins" / "hooks.md"
    target.write_text(render_hook_reference(), encoding="utf-8")
