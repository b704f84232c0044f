"""Side-by-side migration from a legacy provider to the target provider (Cronofy).

See :class:`Migrator` for the state machine, :class:`GuardKind` for what refuses a step
(and what ``force`` may skip), and :func:`compare` for the parity report.
"""

from __future__ import annotations

from ._guards import (
    BARE_FORCE,
    FORCEABLE,
    Guard,
    GuardKind,
    InitialSyncReporter,
    force_set,
    record_initial_sync,
)
from ._jobs import MigrationActivity, register_migration_handlers
from ._machine import (
    BulkResult,
    ConcurrentTransition,
    Force,
    GuardFailed,
    MigrationError,
    Migrator,
    ParityResult,
    PlanRow,
    UserMigration,
)
from ._parity import Difference, Occurrence, ParityReport, compare, occurrences

__all__ = [
    "BARE_FORCE",
    "FORCEABLE",
    "BulkResult",
    "ConcurrentTransition",
    "Difference",
    "Force",
    "Guard",
    "GuardFailed",
    "GuardKind",
    "InitialSyncReporter",
    "MigrationActivity",
    "MigrationError",
    "Migrator",
    "Occurrence",
    "ParityReport",
    "ParityResult",
    "PlanRow",
    "UserMigration",
    "compare",
    "force_set",
    "occurrences",
    "record_initial_sync",
    "register_migration_handlers",
]
