"""Proof against a real client: Microsoft's Graph SDK (msgraph-sdk) talks to the Graph
sandbox over real loopback HTTP.

msgraph-sdk can be pointed at a loopback URL: its request adapter takes an
``httpx.AsyncClient`` (here with ``base_url`` = the sandbox's ``/graph/v1.0``, wrapped in
the SDK's default middleware) and a Kiota bearer-token provider whose allowed-hosts list
is left open, so the SDK's own code builds every URL, header and body.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from calbridge_outlook.testing import OutlookSandboxRig, sandbox_rig

with warnings.catch_warnings():  # kiota warns about its own deprecated names on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from kiota_abstractions.authentication import (
        AccessTokenProvider,
        AllowedHostsValidator,
        BaseBearerTokenAuthenticationProvider,
    )
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
    from msgraph.generated.models.event import Event
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.users.item.calendars.item.calendar_view import (
        calendar_view_request_builder as view_builder,
    )
    from msgraph.generated.users.item.calendars.item.calendar_view.delta import (
        delta_request_builder as delta_builder,
    )
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_request_adapter import options as graph_options
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]


pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_http.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph_core.*"),
]


class _Token(AccessTokenProvider):
    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


@pytest.fixture
async def graph() -> AsyncIterator[tuple[GraphServiceClient, OutlookSandboxRig]]:
    async with sandbox_rig(loopback=True) as rig:
        assert rig.base_url.startswith("http://127.0.0.1:")
        tokens = await rig.session.access_token()
        auth = BaseBearerTokenAuthenticationProvider(_Token(tokens.access_token.reveal()))
        async with httpx.AsyncClient(base_url=f"{rig.base_url}/v1.0") as http:
            client = GraphClientFactory.create_with_default_middleware(
                client=http, options=graph_options
            )
            adapter = GraphRequestAdapter(auth, client=client)
            adapter.base_url = f"{rig.base_url}/v1.0"
            yield GraphServiceClient(request_adapter=adapter), rig


def _prefer() -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration()
    config.headers.add("Prefer", 'outlook.timezone="UTC"')
    return config


async def test_sdk_lists_calendars_and_writes_events(
    graph: tuple[GraphServiceClient, OutlookSandboxRig],
) -> None:
    client, rig = graph
    calendars = await client.me.calendars.get()
    assert calendars is not None
    assert calendars.value is not None
    (cal,) = calendars.value
    assert cal.id == rig.calendar_id
    assert cal.is_default_calendar is True
    assert cal.id is not None
    made = await client.me.calendars.by_calendar_id(cal.id).events.post(
        Event(
            subject="from the SDK",
            body=ItemBody(content="hello"),
            start=DateTimeTimeZone(
                date_time="2026-01-07T10:00:00", time_zone="Pacific Standard Time"
            ),
            end=DateTimeTimeZone(
                date_time="2026-01-07T11:00:00", time_zone="Pacific Standard Time"
            ),
            transaction_id="sdk-1",
        ),
        request_configuration=_prefer(),
    )
    assert made is not None
    assert made.id is not None
    assert made.start is not None
    assert made.start.date_time == "2026-01-07T18:00:00.0000000"
    assert made.change_key
    native = rig.world.event(rig.calendar_id, made.id)
    assert native.summary == "from the SDK"
    patched = await client.me.events.by_event_id(made.id).patch(Event(subject="renamed"))
    assert patched is not None
    assert patched.subject == "renamed"
    assert patched.change_key != made.change_key
    await client.me.events.by_event_id(made.id).delete()
    assert rig.world.events(rig.calendar_id) == []


async def test_sdk_reads_calendar_view_and_a_delta_round(
    graph: tuple[GraphServiceClient, OutlookSandboxRig],
) -> None:
    client, rig = graph
    from calbridge import EventTime

    for day in range(3):
        start = dt.datetime(2026, 1, 6 + day, 9, tzinfo=dt.UTC)
        rig.world.insert_event(
            rig.calendar_id,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
            summary=f"native {day}",
        )
    cal = client.me.calendars.by_calendar_id(rig.calendar_id)
    view_config = RequestConfiguration(
        query_parameters=view_builder.CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time="2026-01-05T00:00:00Z", end_date_time="2026-01-31T00:00:00Z", top=2
        )
    )
    page = await cal.calendar_view.get(request_configuration=view_config)
    assert page is not None
    assert page.value is not None
    subjects = [e.subject for e in page.value]
    assert page.odata_next_link
    rest = await cal.calendar_view.with_url(page.odata_next_link).get()
    assert rest is not None
    assert rest.value is not None
    subjects += [e.subject for e in rest.value]
    assert subjects == ["native 0", "native 1", "native 2"]
    delta_config = RequestConfiguration(
        query_parameters=delta_builder.DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time="2026-01-05T00:00:00Z", end_date_time="2026-01-31T00:00:00Z"
        )
    )
    delta_config.headers.add("Prefer", "odata.maxpagesize=2")
    round1 = await cal.calendar_view.delta.get(request_configuration=delta_config)
    assert round1 is not None
    seen = [e.subject for e in round1.value or []]
    while round1.odata_next_link:
        round1 = await cal.calendar_view.delta.with_url(round1.odata_next_link).get()
        assert round1 is not None
        seen += [e.subject for e in round1.value or []]
    assert sorted(str(s) for s in seen) == ["native 0", "native 1", "native 2"]
    assert round1.odata_delta_link
    victim = rig.world.events(rig.calendar_id)[0]
    rig.world.delete_event(rig.calendar_id, victim.id)
    round2 = await cal.calendar_view.delta.with_url(round1.odata_delta_link).get()
    assert round2 is not None
    (removed,) = round2.value or []
    assert removed.id == victim.id
    assert removed.additional_data.get("@removed") == {"reason": "deleted"}
