"""`make demo` runs as a test too, in its fast mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_fast_migrates_and_loses_nothing() -> None:
    """`calbridge demo --fast --json`: the cohort is retired, one user rolled back, users
    without a Cronofy authorization stay on legacy, parity was clean, nothing lost."""
    out = subprocess.run(
        [sys.executable, "-m", "calbridge", "demo", "--fast", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["lost"] == []
    assert summary["duplicated"] == []
    assert summary["delivered_on_connect"] == 0
    assert summary["cutover_refused"] == []
    assert summary["duplicated_in_world"] == []
    assert summary["post_cutover_writes"] > 0
    assert summary["post_cutover_failures"] == []
    assert summary["parity_checked"] > 0
    assert summary["parity_clean"] == summary["parity_checked"]
    assert summary["users_by_phase"].get("retired", 0) >= 2
    assert summary["rolled_back"]
    assert summary["waiting_reauth"]
    assert summary["users_by_provider"]["cronofy"] == summary["users_by_phase"]["retired"]
    assert summary["notifications"] > 0
    assert summary["batches_delivered"] > 0
    assert summary["events_cached"] > 0
