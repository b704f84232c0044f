"""``FakeExampleAPI``: the Example Calendar API in process, for tests.

Use its :meth:`handle` as an ``httpx.MockTransport`` handler; it also implements
:class:`calbridge.testing.CalendarSeeder`, the contract's way to put events into a
calendar that the provider itself cannot write.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import httpx

import calbridge

__all__ = ["FakeExampleAPI"]


class FakeExampleAPI:
    """One account's calendars and events, served over an ``httpx.MockTransport``."""

    def __init__(
        self,
        *,
        token: str = "example-token",  # noqa: S107 - a fake bearer token, no secret
        calendar_id: str = "work",
    ) -> None:
        self.token = token
        self.calendar_id = calendar_id
        self.calendars: dict[str, dict[str, Any]] = {
            calendar_id: {"id": calendar_id, "name": "Work", "primary": True}
        }
        self.events: dict[str, dict[str, dict[str, Any]]] = {calendar_id: {}}
        self._ids = itertools.count(1)

    def client(self) -> httpx.AsyncClient:
        """An ``AsyncClient`` whose requests this fake answers."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    # -- the API ---------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request of the Example Calendar API."""
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"error": "invalid_token"})
        parts = request.url.path.strip("/").split("/")
        if request.method != "GET":
            return httpx.Response(405, json={"error": "read-only API"})
        if parts[-1] == "calendars":
            return httpx.Response(200, json={"calendars": list(self.calendars.values())})
        if len(parts) >= 3 and parts[-1] == "events" and parts[-3] == "calendars":
            return self._events(parts[-2], request.url.params)
        return httpx.Response(404, json={"error": "not_found"})

    def _events(self, calendar_id: str, params: httpx.QueryParams) -> httpx.Response:
        if calendar_id not in self.events:
            return httpx.Response(404, json={"error": "not_found"})
        start = dt.datetime.fromisoformat(params["start"])
        end = dt.datetime.fromisoformat(params["end"])
        limit = int(params.get("limit", "100"))
        offset = int(params.get("page_token", "0"))
        found = sorted(
            (
                e
                for e in self.events[calendar_id].values()
                if dt.datetime.fromisoformat(e["start"]) < end
                and dt.datetime.fromisoformat(e["end"]) > start
            ),
            key=lambda e: (e["start"], e["id"]),
        )
        page = found[offset : offset + limit]
        more = offset + limit < len(found)
        return httpx.Response(
            200,
            json={"events": page, "next_page_token": str(offset + limit) if more else None},
        )

    # -- calbridge.testing.CalendarSeeder ----------------------------------------------

    async def create(self, draft: calbridge.EventDraft) -> str:
        """Add an event to the calendar; return its id."""
        event_id = f"ev{next(self._ids)}"
        self.events[self.calendar_id][event_id] = self._wire(event_id, draft)
        return event_id

    async def update(self, event_id: str, draft: calbridge.EventDraft) -> None:
        """Replace an event's fields."""
        self.events[self.calendar_id][event_id] = self._wire(event_id, draft)

    async def delete(self, event_id: str) -> None:
        """Remove an event."""
        self.events[self.calendar_id].pop(event_id, None)

    @staticmethod
    def _wire(event_id: str, draft: calbridge.EventDraft) -> dict[str, Any]:
        return {
            "id": event_id,
            "summary": draft.summary,
            "start": draft.start.as_utc().isoformat(),
            "end": draft.end.as_utc().isoformat(),
            "time_zone": draft.start.tzid or "UTC",
        }
