"""The Google sandbox renders only the page asked for: a long read costs one rendering of
each event, not one per page."""

from __future__ import annotations

import datetime as dt

import pytest
from calbridge_google.sandbox import _events, google_sandbox

import calbridge
from calbridge.sandbox import World


@pytest.mark.parametrize("single", [True, False])
def test_each_event_is_rendered_once_over_a_paged_read(
    monkeypatch: pytest.MonkeyPatch, single: bool
) -> None:
    world = World()
    sandbox = google_sandbox(world)
    email = "pager@example.com"
    sandbox.issue_tokens(email)
    cal = world.primary_calendar(email)
    base = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
    for i in range(300):
        start = base + dt.timedelta(hours=i)
        world.insert_event(
            cal.id,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(minutes=30), "UTC"),
            summary=f"e{i}",
        )
    rendered: list[str] = []
    for name in ("occurrence_json", "event_json"):
        real = getattr(_events, name)

        def counting(*args: object, _real: object = real) -> dict[str, object]:
            out = _real(*args)  # type: ignore[operator]
            rendered.append(out["id"])
            return out  # type: ignore[no-any-return]

        monkeypatch.setattr(_events, name, counting)
    params: dict[str, object] = {"singleEvents": single, "maxResults": 100}
    ids: list[str] = []
    while True:
        body = _events.list_events(world, sandbox.state, cal, dict(params))
        ids += [item["id"] for item in body["items"]]
        if "nextPageToken" not in body:
            break
        params["pageToken"] = body["nextPageToken"]
    assert len(ids) == len(set(ids)) == 300
    assert sorted(rendered) == sorted(ids)  # each once, and only what was sent
