"""The example plugin of docs/plugins/writing-a-provider.md installs as written and passes
the provider contract (issue #19, item 6)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "calbridge-example"
GUIDE = ROOT / "docs" / "plugins" / "writing-a-provider.md"


def _pip_install_target(source: Path, target: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALBRIDGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def test_example_plugin_installs_and_passes_the_contract(tmp_path: Path) -> None:
    """pip installs examples/calbridge-example; its own tests run the ProviderContract
    against the installed, read-only provider (write=False) and find it by entry point."""
    target = tmp_path / "site"
    _pip_install_target(EXAMPLE, target)

    done = subprocess.run(
        # -P: import calbridge_example from the installed copy, not the source folder
        [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 passed" in done.stdout
    assert (target / "calbridge_example" / "__init__.py").is_file()


def test_the_guide_pyproject_is_the_example_and_installs_as_written(tmp_path: Path) -> None:
    """The pyproject the guide shows is the example's, and it builds and installs."""
    guide = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", guide, flags=re.DOTALL)
    assert blocks, "the guide shows a pyproject.toml"
    shown = blocks[0]
    example = EXAMPLE.joinpath("pyproject.toml").read_text(encoding="utf-8")
    assert shown.strip() in example
    project = tmp_path / "project"
    shutil.copytree(EXAMPLE / "calbridge_example", project / "calbridge_example")
    project.joinpath("pyproject.toml").write_text(shown, encoding="utf-8")
    target = tmp_path / "site"

    _pip_install_target(project, target)

    listed = subprocess.run(
        [str(Path(sys.executable).parent / "calbridge"), "providers", "--json"],
        env=_env(target),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert '"example"' in listed.stdout
    assert "calbridge-example 0.1.0" in listed.stdout
