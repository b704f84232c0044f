"""Handlers loaded by ``calbridge worker --handlers tests.jobs.jobshandlers:handlers``."""

from __future__ import annotations

import asyncio
import os
import pathlib

from calbridge.jobs import HandlerRegistry, Job, JobQueue

handlers = HandlerRegistry()


@handlers.handler("slow")
async def slow(job: Job) -> None:
    """Sleep ``payload["sleep"]`` seconds, after creating the file ``payload["started"]``
    (when given: how a test knows the handler itself is running, not just the claim)."""
    if "started" in job.payload:
        await asyncio.to_thread(pathlib.Path(job.payload["started"]).touch)
    await asyncio.sleep(float(job.payload.get("sleep", 0)))


def factory(queue: JobQueue) -> HandlerRegistry:
    """A registry built from the queue (the loader's callable form)."""
    built = HandlerRegistry()
    built.add("from-factory", slow)
    return built


#: not a registry (for the loader's error path)
not_a_registry = object()


@handlers.handler("whoami")
async def whoami(job: Job) -> None:
    """Write the id of the process running the job to the file ``payload["out"]``."""
    out = pathlib.Path(job.payload["out"])
    await asyncio.to_thread(out.write_text, str(os.getpid()))
