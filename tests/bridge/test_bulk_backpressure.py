"""Bulk runs are rate-aware: one user's 429 or provider error never stops the run, a short
Retry-After is waited out (a bounded number of times) and each user is reported as it
finishes."""

from __future__ import annotations

from typing import Any

import pytest

from calbridge.errors import RateLimited, Unavailable
from calbridge.migration import Migrator
from calbridge.router import Phase

from .conftest import BridgeRig


async def test_bulk_records_429s_and_errors_and_goes_on(
    rig: BridgeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = ["ann", "bob", "cat", "dan"]
    for user in users:
        await rig.connect(user, "google", f"{user}@example.com")
        await rig.connect(user, "cronofy", f"{user}@example.com")
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    migrator = Migrator(rig.bridge.runtime, sleep=fake_sleep)
    real_move = Migrator._move
    calls: dict[str, int] = {}

    async def move(self: Migrator, user: str, *args: Any, **kwargs: Any) -> Any:
        calls[user] = calls.get(user, 0) + 1
        if user == "ann":  # throttled for longer than the run waits
            raise RateLimited("slow down", provider="google", retry_after=600)
        if user == "bob" and calls[user] <= 2:  # throttled twice briefly, then fine
            raise RateLimited("slow down", provider="google", retry_after=3)
        if user == "cat":
            raise Unavailable("down", provider="google")
        return await real_move(self, user, *args, **kwargs)

    monkeypatch.setattr(Migrator, "_move", move)
    entries: list[dict[str, Any]] = []
    outcomes: list[tuple[str, str]] = []
    result = await migrator.bulk(
        users,
        Phase.SHADOW,
        report=entries.append,
        progress=lambda u, o: outcomes.append((u, o)),
        retries=2,
        max_wait=60,
    )
    assert outcomes == [
        ("ann", "rate_limited"),
        ("bob", "moved"),
        ("cat", "error"),
        ("dan", "moved"),
    ]
    assert [(e["user"], e["outcome"]) for e in entries] == outcomes
    assert "retry after 600" in entries[0]["reason"]
    assert entries[1]["reason"] == ""
    assert waits == [3, 3]  # bob's two short Retry-Afters waited out; ann's not
    assert calls == {"ann": 1, "bob": 3, "cat": 1, "dan": 1}
    assert result.moved == ("bob", "dan")
    assert result.rate_limited == ("ann",)
    assert result.errors == ("cat",)
    refused = {r["user"]: r for r in result.as_dict()["refused"]}
    assert refused["ann"]["rate_limited"]
    assert not refused["ann"]["error"]
    assert refused["cat"]["error"]
    assert not refused["cat"]["rate_limited"]

    # retries are bounded: a third short 429 in a row leaves the user rate_limited
    monkeypatch.setattr(Migrator, "_move", real_move)
    calls.clear()

    async def always_throttled(self: Migrator, user: str, *args: Any, **kwargs: Any) -> Any:
        calls[user] = calls.get(user, 0) + 1
        raise RateLimited("slow down", provider="google", retry_after=1)

    monkeypatch.setattr(Migrator, "_move", always_throttled)
    waits.clear()
    again = await migrator.bulk(["ann"], Phase.SHADOW, retries=2)
    assert again.rate_limited == ("ann",)
    assert calls == {"ann": 3}
    assert waits == [1, 1]

    # the rerun resumes: users moved before are `already`, the rest are moved
    monkeypatch.setattr(Migrator, "_move", real_move)
    rerun = await migrator.bulk(users, Phase.SHADOW)
    assert sorted(rerun.moved) == ["ann", "cat"]
    assert sorted(rerun.already) == ["bob", "dan"]
