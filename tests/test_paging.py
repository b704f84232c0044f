"""calbridge.prefetched_pages: one page ahead, links checked before a page comes out,
nothing left running when the reader stops."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import calbridge

Page = tuple[str, str | None]  # (name, next ref)


class Chain:
    """Pages p0 -> p1 -> ... -> p{n-1}; records fetches and whether ``sent`` was given."""

    def __init__(self, n: int, *, signal: bool = True, hold: asyncio.Event | None = None):
        self.n = n
        self.signal = signal
        self.hold = hold
        self.fetched: list[str | None] = []
        self.cancelled: list[str | None] = []

    async def fetch(self, ref: str | None, sent: asyncio.Future[None] | None) -> Page:
        self.fetched.append(ref)
        if sent is not None and self.signal:
            sent.set_result(None)  # "the request is on the wire"
        try:
            if self.hold is not None and ref is not None:
                await self.hold.wait()  # the provider is still working on it
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(ref)
            raise
        i = 0 if ref is None else int(ref[1:])
        return f"p{i}", (f"p{i + 1}" if i + 1 < self.n else None)

    @staticmethod
    def next_ref(page: Page) -> str | None:
        return page[1]


async def test_each_next_page_is_asked_for_before_the_current_one_comes_out() -> None:
    chain = Chain(3)
    seen: list[tuple[str, list[str | None]]] = []
    pages = calbridge.prefetched_pages(chain.fetch, chain.next_ref)
    async with contextlib.aclosing(pages):
        async for name, _ in pages:
            seen.append((name, list(chain.fetched)))
    assert seen == [
        ("p0", [None, "p1"]),
        ("p1", [None, "p1", "p2"]),
        ("p2", [None, "p1", "p2"]),
    ]


async def test_without_prefetch_each_page_is_fetched_when_asked_for() -> None:
    chain = Chain(3)
    seen: list[int] = []
    pages = calbridge.prefetched_pages(chain.fetch, chain.next_ref, prefetch=False)
    async with contextlib.aclosing(pages):
        async for _ in pages:
            seen.append(len(chain.fetched))
    assert seen == [1, 2, 3]


async def test_a_transport_that_reports_no_trace_still_works() -> None:
    """No trace events: the wait ends when the next page has arrived."""
    chain = Chain(3, signal=False)
    pages = calbridge.prefetched_pages(chain.fetch, chain.next_ref)
    async with contextlib.aclosing(pages):
        names = [name async for name, _ in pages]
    assert names == ["p0", "p1", "p2"]


async def test_a_link_refused_stops_the_read_before_its_page_comes_out() -> None:
    chain = Chain(3)

    def refuse(page: Page) -> str | None:
        if page[1] == "p2":
            raise ValueError("next page elsewhere")
        return page[1]

    names: list[str] = []

    async def read() -> None:
        pages = calbridge.prefetched_pages(chain.fetch, refuse)
        async with contextlib.aclosing(pages):
            async for name, _ in pages:
                names.append(name)

    with pytest.raises(ValueError, match="elsewhere"):
        await read()
    assert names == ["p0"]  # p1 names the refused link: it never comes out
    assert chain.fetched == [None, "p1"]


async def test_a_reader_that_stops_early_cancels_the_page_asked_for_ahead() -> None:
    chain = Chain(5, hold=asyncio.Event())
    pages = calbridge.prefetched_pages(chain.fetch, chain.next_ref)
    async with contextlib.aclosing(pages):
        async for name, _ in pages:
            assert name == "p0"
            break
    assert chain.fetched == [None, "p1"]
    assert chain.cancelled == ["p1"]
