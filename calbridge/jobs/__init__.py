"""calbridge's durable job queue: at-least-once jobs on the store's database.

In the manner of Solid Queue, Oban and procrastinate, on SQLite (one process or a few
on one machine) or PostgreSQL (many workers on many hosts, ``FOR UPDATE SKIP LOCKED``):
leases with fencing tokens and heartbeats, retries with backoff, dead letters,
scheduled and recurring jobs, coalescing keys, serial keys and graceful shutdown.
See ``docs/jobs.md``. The queue's tables and statements are the store's
(:mod:`calbridge.store.jobs`); the functions that take a ``conn`` are re-exported here.

Example::

    from calbridge.jobs import HandlerRegistry, Job, JobQueue, Worker, enqueue

    handlers = HandlerRegistry()

    @handlers.handler("sync")
    async def sync(job: Job) -> None: ...

    with write(engine) as conn:                    # the caller's own transaction
        store.channels.inbox_insert(..., conn=conn)
        enqueue(conn, "sync", {"account": "a1", "calendar": "c1"}, coalesce_key="sync:a1:c1")

    await Worker(JobQueue(engine), handlers).run()  # until worker.stop() / SIGTERM
"""

from __future__ import annotations

from ..store.jobs import (
    NOTIFY_CHANNEL,
    STATES,
    assert_lease,
    claim,
    complete,
    enqueue,
    enqueue_coalesced,
    enqueue_due_schedules,
    ensure_schedule,
    fail,
    heartbeat,
    job_schedules,
    jobs,
    release,
    remove_queued,
    remove_schedule,
    remove_schedules,
)
from ._model import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    Clock,
    Handler,
    Job,
    LeaseLost,
    RetryLater,
    describe_error,
)
from ._queue import DEFAULT_RETENTION, JobQueue
from ._worker import (
    BUILTIN_HANDLERS,
    PRUNE_KIND,
    HandlerRegistry,
    Worker,
    default_backoff,
    load_handlers,
)

__all__ = [
    "BUILTIN_HANDLERS",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "DEFAULT_RETENTION",
    "NOTIFY_CHANNEL",
    "PRUNE_KIND",
    "STATES",
    "Clock",
    "Handler",
    "HandlerRegistry",
    "Job",
    "JobQueue",
    "LeaseLost",
    "RetryLater",
    "Worker",
    "assert_lease",
    "claim",
    "complete",
    "default_backoff",
    "describe_error",
    "enqueue",
    "enqueue_coalesced",
    "enqueue_due_schedules",
    "ensure_schedule",
    "fail",
    "heartbeat",
    "job_schedules",
    "jobs",
    "load_handlers",
    "release",
    "remove_queued",
    "remove_schedule",
    "remove_schedules",
]
