"""Reading a long window as several concurrent sub-window reads.

Cronofy pages a read through opaque ``next_page`` URLs, so one read is a chain: each page
costs a full round trip, however fast the client. When the first page of a read says there
are many pages, the provider reads the window again as ``k`` sub-windows at once (each still
a chain, each still prefetching), which divides the time a latency-bound read takes by
about ``k``.

Sub-windows overlap their neighbours: Cronofy returns an event in every window it overlaps,
so an event across a boundary comes from both sides. Each event is kept by exactly one
sub-window, the one its start falls in (the first keeps everything that started before the
window); the sub-window queries reach a minute below their nominal start, so an event that
ends exactly on a boundary is returned whether Cronofy's "ends on or after ``from``" is
inclusive or not. Nothing depends on the order Cronofy sorts a read in.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, TypeVar

import calbridge

__all__ = ["REACH", "merge", "split_window"]

T = TypeVar("T")

#: how far below its nominal start a sub-window's query reaches
REACH = dt.timedelta(minutes=1)


def split_window(window: calbridge.TimeRange, k: int) -> list[calbridge.TimeRange]:
    """``window`` as up to ``k`` consecutive sub-windows on whole seconds (Cronofy's grain)."""
    start = window.start.astimezone(dt.UTC)
    end = window.end.astimezone(dt.UTC)
    step = (end - start) / max(1, k)
    cuts = [start]
    for i in range(1, k):
        cut = (start + step * i).replace(microsecond=0)
        if cut > cuts[-1] and cut < end:
            cuts.append(cut)
    cuts.append(end)
    return [calbridge.TimeRange(start=a, end=b) for a, b in itertools.pairwise(cuts)]


async def merge(sources: Sequence[AsyncIterator[T]], *, buffer: int) -> AsyncGenerator[T, None]:
    """Items of every source as they come (each source's own order kept), run concurrently.

    At most ``buffer`` items wait to be taken, so memory stays bounded however long the
    sources are. The first failure of any source is raised here and stops the others;
    closing this iterator stops them too.
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(buffer)

    async def pump(source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await queue.put(("item", item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the consumer, raised there
            await queue.put(("error", exc))
            return
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await queue.put(("done", None))

    tasks = [asyncio.ensure_future(pump(source)) for source in sources]
    running = len(tasks)
    try:
        while running:
            kind, value = await queue.get()
            if kind == "error":
                raise value
            if kind == "done":
                running -= 1
            else:
                yield value
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
