"""Reads that follow a link or token from each page to the next, one page ahead.

Every provider pages the same way: the next page's URL (Cronofy's ``pages.next_page``,
Graph's ``@odata.nextLink``) or token (Google's ``nextPageToken``) is in the page before
it, so a read is a chain. :func:`prefetched_pages` requests the next page, and waits until
that request is on the wire, before it hands out the page in hand: the provider works on
the next page while the caller converts this one. At most two pages are held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TypeVar

__all__ = ["prefetched_pages"]

P = TypeVar("P")
R = TypeVar("R")


async def prefetched_pages(
    fetch: Callable[[R | None, asyncio.Future[None] | None], Awaitable[P]],
    next_ref: Callable[[P], R | None],
    *,
    prefetch: bool = True,
) -> AsyncGenerator[P, None]:
    """The pages of one read, each next one requested before the current one comes out.

    Args:
        fetch: ``fetch(ref, sent)`` gets a page: the first for ``ref=None``, else the page
            ``ref`` names. When ``sent`` is given, pass
            ``extensions={"trace": calbridge.signal_when_sent(sent)}`` with the request so
            the wait ends as soon as it is written (with a transport that reports no trace
            events, the wait ends when the page has arrived).
        next_ref: the next page's URL or token in a page, or None on the last page. It
            runs before the page is handed out, so it may refuse a link (raise).
        prefetch: False fetches each page only when the caller asks for it.

    Use it under :func:`contextlib.aclosing` (or close it): a caller that stops early then
    cancels the request made ahead.
    """
    page = await fetch(None, None)
    loop = asyncio.get_running_loop()
    while True:
        ref = next_ref(page)
        pending: asyncio.Future[P] | None = None
        if ref is not None and prefetch:
            sent: asyncio.Future[None] = loop.create_future()
            pending = asyncio.ensure_future(fetch(ref, sent))
            try:
                await asyncio.wait((pending, sent), return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # the caller was cancelled meanwhile
                pending.cancel()
                raise
            finally:
                sent.cancel()  # a plain future: nothing left running
        try:
            yield page
        except BaseException:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            raise
        if ref is None:
            return
        page = await pending if pending is not None else await fetch(ref, None)
