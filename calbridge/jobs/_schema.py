"""The job queue's tables, now in :mod:`calbridge.store.jobs` with its statements.

Kept as a name for code that imported the tables from here (bench/).
"""

from __future__ import annotations

from ..store.jobs import DEAD, DONE, MERGED, QUEUED, RUNNING, STATES, job_schedules, jobs

__all__ = ["DEAD", "DONE", "MERGED", "QUEUED", "RUNNING", "STATES", "job_schedules", "jobs"]
