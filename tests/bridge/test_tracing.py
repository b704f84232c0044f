"""OpenTelemetry spans (issue #22 item 4): bridge operations and every provider HTTP call
are spans with provider, operation and outcome, children of the application's span, and
never carry a secret, a path or a calendar's content."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra and the SDK (make test)")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from calbridge import EventDraft, EventTime, errors

from .conftest import CRONOFY_SECRET, GOOGLE_SECRET, BridgeRig

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """calbridge's spans of one test (the SDK provider is installed once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _draft(rig: BridgeRig, summary: str) -> EventDraft:
    start = (rig.world.clock.now() + dt.timedelta(days=1)).replace(minute=0, second=0)
    return EventDraft(
        summary=summary,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
    )


def _named(found: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


async def test_operations_and_provider_calls_are_spans(
    rig: BridgeRig, spans: InMemorySpanExporter
) -> None:
    b = rig.bridge
    await rig.connect("ann", "google", "ann@example.com")
    tracer = trace.get_tracer("the-app")
    spans.clear()
    with tracer.start_as_current_span("app request") as parent:
        event = await b.create_event("ann", "primary", _draft(rig, "Therapy session"), key="t-1")
    assert event.summary == "Therapy session"
    found = spans.get_finished_spans()

    (create,) = _named(found, "calbridge.create_event")
    attrs = dict(create.attributes or {})
    assert attrs["calbridge.operation"] == "create_event"
    assert attrs["calbridge.provider"] == "google"
    assert attrs["calbridge.outcome"] == "ok"
    assert create.parent is not None
    assert create.parent.span_id == parent.get_span_context().span_id

    http = [s for s in found if s.kind is trace.SpanKind.CLIENT]
    assert http, [s.name for s in found]
    for call in http:
        assert call.name in {"GET", "POST", "PUT", "PATCH", "DELETE"}
        a = dict(call.attributes or {})
        assert a["calbridge.provider"] == "google"
        assert a["server.address"] == "sandbox.test"
        assert isinstance(a["http.response.status_code"], int)
        assert a["calbridge.outcome"] == "ok"
        assert call.parent is not None
        assert call.parent.span_id == create.context.span_id

    # nothing secret, no path or query, no content
    for s in found:
        for key, value in (s.attributes or {}).items():
            assert not key.startswith("url."), key
            text = str(value)
            for leak in (GOOGLE_SECRET, CRONOFY_SECRET, "Therapy", "ann@example.com", "/calendars"):
                assert leak not in text, (s.name, key)


async def test_failures_say_their_type_and_status(
    rig: BridgeRig, spans: InMemorySpanExporter
) -> None:
    b = rig.bridge
    await rig.connect("bo", "google", "bo@example.com")
    await b.create_event("bo", "primary", _draft(rig, "One"), key="t-2")
    spans.clear()
    with pytest.raises(errors.IdempotencyConflict):
        await b.create_event("bo", "primary", _draft(rig, "Two"), key="t-2")
    (refused,) = _named(spans.get_finished_spans(), "calbridge.create_event")
    attrs = dict(refused.attributes or {})
    assert (attrs["calbridge.outcome"], attrs["error.type"]) == ("error", "IdempotencyConflict")
    assert refused.status.status_code is trace.StatusCode.ERROR
    assert "t-2" not in (refused.status.description or "")  # the type, never the message

    spans.clear()
    rig.world.faults.fail_next("google", 404, path_prefix="/calendar/v3/calendars/")
    with pytest.raises(errors.NotFound):
        await b.update_event("bo", "t-2", _draft(rig, "Three"))
    found = spans.get_finished_spans()
    (update,) = _named(found, "calbridge.update_event")
    assert dict(update.attributes or {})["error.type"] == "NotFound"
    answered = [dict(s.attributes or {}) for s in found if s.kind is trace.SpanKind.CLIENT]
    assert {"error.type": "404"}.items() <= next(
        a for a in answered if a["http.response.status_code"] == 404
    ).items()


@pytest.mark.parametrize("push", [True], ids=["push"], indirect=True)
async def test_a_notification_its_job_and_its_sync_round_are_spans(
    rig: BridgeRig, spans: InMemorySpanExporter
) -> None:
    """A native change: the webhook delivery is a server span; the sync job a consumer
    span whose child is the sync round, whose children are the provider's HTTP calls."""
    await rig.connect("cy", "google", "cy@example.com")
    await rig.work()
    start = (rig.world.clock.now() + dt.timedelta(hours=30)).replace(minute=0, second=0)
    rig.world.insert_event(
        rig.world.primary_calendar("cy@example.com").id,
        start=EventTime.zoned(start, "UTC"),
        end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        summary="Secret offsite",
    )
    spans.clear()
    await rig.settle(1)  # the sandbox delivers the notification
    await rig.work()  # the sync job runs
    found = spans.get_finished_spans()

    hooks = _named(found, "calbridge.webhook")
    assert hooks, [s.name for s in found]
    hook = dict(hooks[0].attributes or {})
    assert hooks[0].kind is trace.SpanKind.SERVER
    assert hook["calbridge.provider"] == "google"
    assert 200 <= int(str(hook["http.response.status_code"])) < 300

    jobs = _named(found, "calbridge.job sync")
    assert jobs, [s.name for s in found]
    assert jobs[0].kind is trace.SpanKind.CONSUMER
    assert dict(jobs[0].attributes or {})["calbridge.job.kind"] == "sync"
    rounds = [s for s in _named(found, "calbridge.sync_round") if s.parent is not None]
    changed = [r for r in rounds if int(str(dict(r.attributes or {})["calbridge.sync.changed"]))]
    assert changed, [dict(r.attributes or {}) for r in rounds]
    (one, *_) = changed
    assert dict(one.attributes or {})["calbridge.provider"] == "google"
    assert one.parent is not None
    assert one.parent.span_id in {j.context.span_id for j in jobs}
    calls = [s for s in found if s.parent is not None and s.parent.span_id == one.context.span_id]
    assert any(s.kind is trace.SpanKind.CLIENT for s in calls)
    for s in found:
        for value in (s.attributes or {}).values():
            assert "Secret offsite" not in str(value)
            assert "cy@example.com" not in str(value)
