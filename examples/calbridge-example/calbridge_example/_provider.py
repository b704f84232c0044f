"""``ExampleProvider``: reads the Example Calendar API; it cannot write, push or sync
incrementally, and says so in its capabilities.

The API (served for real by ``fake.FakeExampleAPI`` in the tests)::

    GET {api}/calendars                   -> {"calendars": [{"id", "name", "primary"}]}
    GET {api}/calendars/{id}/events?start=ISO&end=ISO&limit=N&page_token=T
                                          -> {"events": [...], "next_page_token": T | null}

Each event is ``{"id", "summary", "start", "end", "time_zone"}`` with ISO 8601 instants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx

import calbridge
from calbridge import errors

__all__ = ["DEFAULT_API", "ExampleProvider"]

DEFAULT_API = "https://api.example.com/v1"


class ExampleProvider(calbridge.Provider):
    """Calendars and events of the Example Calendar API, read-only.

    Settings (``[providers.example]`` in ``calbridge.toml``, or
    :class:`calbridge.ProviderSettings` in code) reach the provider as ``self.settings``:
    ``base_urls["api"]`` points it at another host (a sandbox), and the option
    ``page_size`` sets how many events one page asks for.
    """

    name: ClassVar[str] = "example"
    capabilities: ClassVar[calbridge.Capabilities] = calbridge.Capabilities(
        write=False,
        idempotent_create=False,
        incremental_sync=False,
        free_busy=False,
        push=False,
    )

    def __init__(self, *, http: httpx.AsyncClient, settings: calbridge.ProviderSettings) -> None:
        super().__init__(http=http, settings=settings)
        self.api = settings.base_urls.get("api", DEFAULT_API).rstrip("/")
        self.page_size = int(settings.option("page_size", 100))

    async def _get(
        self, session: calbridge.Session, path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """GET one resource; on a 401 refresh the token once and retry."""
        tokens = await session.access_token()
        for attempt in range(2):
            request = self.http.build_request(
                "GET",
                f"{self.api}{path}",
                params=params,
                headers={"Authorization": f"Bearer {tokens.access_token.reveal()}"},
            )
            response = await calbridge.send(self.http, request, provider=self.name)
            if response.status_code == 401 and attempt == 0:
                tokens = await session.refresh(tokens)
                continue
            if response.status_code == 404:
                raise errors.NotFound(f"{path} not found", provider=self.name, status=404)
            if response.status_code >= 400:
                raise errors.ProviderError(
                    f"GET {path} answered {response.status_code}",
                    provider=self.name,
                    status=response.status_code,
                )
            body: dict[str, Any] = response.json()
            return body
        raise errors.ReauthRequired("the refreshed token was refused too", provider=self.name)

    async def list_calendars(self, session: calbridge.Session) -> list[calbridge.Calendar]:
        """Every calendar of the account."""
        body = await self._get(session, "/calendars")
        return [
            calbridge.Calendar(
                id=c["id"],
                provider=self.name,
                name=c["name"],
                primary=bool(c.get("primary", False)),
                read_only=True,
                raw=c,
            )
            for c in body["calendars"]
        ]

    async def list_events(
        self,
        session: calbridge.Session,
        calendar_id: str,
        window: calbridge.TimeRange,
        *,
        page_size: int | None = None,
    ) -> AsyncIterator[Sequence[calbridge.Event]]:
        """Events overlapping ``window``, one API page at a time."""
        params = {
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "limit": str(page_size or self.page_size),
        }
        while True:
            body = await self._get(session, f"/calendars/{calendar_id}/events", params)
            yield [self._event(calendar_id, e) for e in body["events"]]
            token = body.get("next_page_token")
            if not token:
                return
            params = {**params, "page_token": token}

    def _event(self, calendar_id: str, wire: Mapping[str, Any]) -> calbridge.Event:
        zone = wire.get("time_zone") or "UTC"
        return calbridge.Event(
            id=wire["id"],
            calendar_id=calendar_id,
            provider=self.name,
            start=calbridge.EventTime.zoned(dt.datetime.fromisoformat(wire["start"]), zone),
            end=calbridge.EventTime.zoned(dt.datetime.fromisoformat(wire["end"]), zone),
            summary=wire.get("summary"),
            raw=wire,
        )
