"""Handlers loaded by ``calbridge worker --handlers tests.jobs.jobshandlers:handlers``."""

from __future__ import annotations

import asyncio

from calbridge.jobs import HandlerRegistry, Job

handlers = HandlerRegistry()


@handlers.handler("slow")
async def slow(job: Job) -> None:
    """Sleep ``payload["sleep"]`` seconds."""
    await asyncio.sleep(float(job.payload.get("sleep", 0)))


#: not a registry (for the loader's error path)
not_a_registry = object()
