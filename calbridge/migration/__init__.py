"""Side-by-side migration from a legacy provider to the target provider (Cronofy).

See :class:`Migrator` for the state machine and :func:`compare` for the parity report.
"""

from __future__ import annotations

from ._machine import BulkResult, GuardFailed, MigrationError, Migrator, PlanRow, UserMigration
from ._parity import Difference, Occurrence, ParityReport, compare, occurrences

__all__ = [
    "BulkResult",
    "Difference",
    "GuardFailed",
    "MigrationError",
    "Migrator",
    "Occurrence",
    "ParityReport",
    "PlanRow",
    "UserMigration",
    "compare",
    "occurrences",
]
