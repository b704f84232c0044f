"""`make demo` runs as a test too, in its fast mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_fast_migrates_and_loses_nothing(tmp_path: Path) -> None:
    """`calbridge demo --fast --json`: the cohort is retired, one user rolled back, users
    without a Cronofy authorization stay on legacy, parity was clean, nothing lost. Run
    on a host whose environment names a deployment, it leaves that deployment alone."""
    production = tmp_path / "production.db"
    config = tmp_path / "production.toml"
    config.write_text(f'[calbridge]\ndatabase_url = "sqlite:///{production}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "calbridge", "demo", "--fast", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "CALBRIDGE_CONFIG": str(config),
            "CALBRIDGE_DATABASE_URL": f"sqlite:///{production}",
        },
    )
    assert not production.exists(), "the demo touched the deployment's store"
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
