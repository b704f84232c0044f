"""The ``calbridge`` command (``calbridge.cli:main``); the group is in ``_main``.

Without the ``cli`` extra (click, rich) the script says what to install instead of
dying with ``ModuleNotFoundError``.
"""

from __future__ import annotations

import sys

try:
    from ._main import COMMANDS, main
except ModuleNotFoundError as _exc:
    if (_exc.name or "").partition(".")[0] not in ("click", "rich"):
        raise
    _MISSING = _exc.name

    COMMANDS: dict[str, str] = {}  # type: ignore[no-redef]

    def main() -> None:  # type: ignore[misc]
        """Explain that the command line needs the ``cli`` extra, then exit 1."""
        sys.exit(
            f'calbridge: the command line needs the "cli" extra ({_MISSING} is not '
            'installed): pip install "calbridge[cli]"'
        )


__all__ = ["COMMANDS", "main"]
