"""The main job of ``make demo``: an end-to-end migration on the local sandboxes."""

from __future__ import annotations

from ._scenario import DemoOptions, DemoSummary, run_demo

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]
