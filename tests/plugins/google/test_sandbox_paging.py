"""The Google sandbox renders only the page asked for, and sorts a query's result once per
read: a long read costs one rendering of each event and one sort, not one per page."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from calbridge_google.sandbox import _events, google_sandbox

import calbridge
from calbridge.sandbox import World

BASE = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)


def _calendar(n: int) -> tuple[World, Any, Any]:
    world = World()
    sandbox = google_sandbox(world)
    email = "pager@example.com"
    sandbox.issue_tokens(email)
    cal = world.primary_calendar(email)
    for i in range(n):
        _insert(world, cal.id, i)
    return world, sandbox, cal


def _insert(world: World, calendar_id: str, i: int) -> None:
    start = BASE + dt.timedelta(hours=i)
    world.insert_event(
        calendar_id,
        start=calbridge.EventTime.zoned(start, "UTC"),
        end=calbridge.EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
        summary=f"e{i}",
    )


def _read(world: World, sandbox: Any, cal: Any, params: dict[str, object]) -> list[str]:
    ids: list[str] = []
    params = dict(params)
    while True:
        body = _events.list_events(world, sandbox.state, cal, dict(params))
        ids += [item["id"] for item in body["items"]]
        if "nextPageToken" not in body:
            return ids
        params["pageToken"] = body["nextPageToken"]


@pytest.mark.parametrize("single", [True, False])
def test_each_event_is_rendered_once_over_a_paged_read(
    monkeypatch: pytest.MonkeyPatch, single: bool
) -> None:
    world, sandbox, cal = _calendar(300)
    rendered: list[str] = []
    for name in ("occurrence_json", "event_json"):
        real = getattr(_events, name)

        def counting(*args: object, _real: object = real) -> dict[str, object]:
            out = _real(*args)  # type: ignore[operator]
            rendered.append(out["id"])
            return out  # type: ignore[no-any-return]

        monkeypatch.setattr(_events, name, counting)
    ids = _read(world, sandbox, cal, {"singleEvents": single, "maxResults": 100})
    assert len(ids) == len(set(ids)) == 300
    assert sorted(rendered) == sorted(ids)  # each once, and only what was sent


def test_a_read_sorts_its_result_once_and_again_only_after_a_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, sandbox, cal = _calendar(300)
    computed: list[int] = []
    real = _events._listing

    def counting(*args: Any, **kwargs: Any) -> Any:
        computed.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_events, "_listing", counting)
    window = {"timeMin": BASE, "timeMax": BASE + dt.timedelta(days=30)}
    params: dict[str, object] = {"singleEvents": True, "maxResults": 50, **window}
    first = _read(world, sandbox, cal, params)
    assert len(first) == 300
    assert len(computed) == 1  # six pages, one sort
    # a write in the middle of a read: the next page sorts again, from the same snapshot,
    # so the read gives what it gives with no cache: the events as they were when it began
    body = _events.list_events(world, sandbox.state, cal, dict(params))
    assert len(computed) == 1  # the same query on the same calendar: kept
    token = body["nextPageToken"]
    _insert(world, cal.id, 400)
    rest = _read(world, sandbox, cal, {**params, "pageToken": token})
    assert [item["id"] for item in body["items"]] + rest == first
    assert len(computed) == 2  # sorted again once, for the pages after the write
    # a new read sees the new event
    assert len(_read(world, sandbox, cal, params)) == 301
    assert len(computed) == 3
