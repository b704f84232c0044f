"""Run every benchmark: ``python -m bench`` (or ``make bench``).

Each ``bench/bench_*.py`` runs in its own process, one after the other, so one benchmark's
memory and threads never skew another's. Arguments after ``--`` go to every benchmark;
``python -m bench cronofy`` runs only the benchmarks whose file name contains ``cronofy``.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys


def main(argv: list[str]) -> int:
    """Run the selected benchmarks; the exit status is the number that failed."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    here = pathlib.Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(word in s.name for word in argv)]
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script), *extra], check=False)
        if result.returncode != 0:
            print(f"!! {script.name} exited with {result.returncode}", flush=True)
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
