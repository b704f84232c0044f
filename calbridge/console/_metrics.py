"""Prometheus metrics read from the store at scrape time (``GET /metrics``).

Every number is read from the shared store when Prometheus scrapes, so any one process
serving ``/metrics`` (the console, or ``calbridge serve --metrics-path``) reports the
whole deployment: every worker and receiver writes to the same tables. Counters kept in
this process (console logins and actions) are added to the same registry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .._tally import PROVIDER_CALLS, SYNC_ROUNDS
from ..store import CountRows, CountTotal, read
from ..store import _console_queries as q

__all__ = [
    "CONTENT_TYPE",
    "ConsoleCounters",
    "StoreCollector",
    "WebhookCounter",
    "make_registry",
    "metrics_endpoint",
    "render",
]

#: the text exposition format's content type
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the ``phase`` label of users the migration never touched
UNMIGRATED = "not_under_migration"


class StoreCollector(Collector):
    """Gauges read from the store at every scrape (one read transaction)."""

    def __init__(self, engine: Any, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        started = time.perf_counter()
        up = GaugeMetricFamily("calbridge_store_up", "1 when the last scrape read the store.")
        try:
            with read(self._engine) as conn:
                phases = q.phase_counts(conn)
                accounts = q.account_states(conn)
                channels = q.channel_states(conn)
                jobs = q.job_states(conn)
                inbox = q.inbox_backlog(conn)
                budgets = q.budget_windows(conn)
                counts = CountRows(self._engine).totals(conn)
        except Exception:  # a scrape reports the store down, never a 500
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self._clock()
        yield from self._users(phases)
        yield from self._labelled(
            "calbridge_accounts",
            "Connected accounts by provider and status.",
            ["provider", "status"],
            accounts,
        )
        yield from self._labelled(
            "calbridge_channels",
            "Change channels by provider and state (health).",
            ["provider", "state"],
            channels,
        )
        yield from self._jobs(jobs, now)
        yield from self._inbox(inbox, now)
        yield from self._budgets(budgets, now)
        yield from self._counts(counts)
        took = GaugeMetricFamily(
            "calbridge_store_scrape_seconds", "Seconds the last scrape spent reading the store."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took

    @staticmethod
    def _users(phases: dict[str, int]) -> Iterator[GaugeMetricFamily]:
        users = GaugeMetricFamily(
            "calbridge_users",
            f"App users by migration phase ({UNMIGRATED}: never touched by the migration).",
            labels=["phase"],
        )
        for phase in ("legacy", "shadow", "dual", "cutover", "retired"):
            users.add_metric([phase], phases.get(phase, 0))
        users.add_metric([UNMIGRATED], phases.get(q.NOT_UNDER_MIGRATION, 0))
        yield users

    @staticmethod
    def _labelled(
        name: str, doc: str, labels: list[str], values: dict[tuple[str, str], int]
    ) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for key, count in sorted(values.items()):
            family.add_metric(list(key), count)
        yield family

    @staticmethod
    def _jobs(jobs: list[q.JobStates], now: float) -> Iterator[GaugeMetricFamily]:
        labels = ["queue", "kind", "state"]
        count = GaugeMetricFamily(
            "calbridge_jobs", "Jobs by queue, kind (sync, deliver, ...) and state.", labels=labels
        )
        retrying = GaugeMetricFamily(
            "calbridge_jobs_retrying",
            "Queued jobs that were claimed before and did not finish (their last attempt "
            "failed, was rate limited, or its worker died): by queue and kind.",
            labels=["queue", "kind"],
        )
        age = GaugeMetricFamily(
            "calbridge_jobs_oldest_age_seconds",
            "Seconds since the oldest job of the queue, kind and state became runnable "
            "(queued: how long work has waited; 0 when it is not due yet).",
            labels=labels,
        )
        for row in sorted(jobs, key=lambda r: (r.queue, r.kind, r.state)):
            key = [row.queue, row.kind, row.state]
            count.add_metric(key, row.count)
            if row.state == "queued":
                retrying.add_metric([row.queue, row.kind], row.retried)
            if row.state in ("queued", "running", "dead") and row.oldest_run_at_ms is not None:
                age.add_metric(key, max(0.0, now - row.oldest_run_at_ms / 1000.0))
        yield from (count, retrying, age)

    @staticmethod
    def _inbox(inbox: list[q.InboxBacklog], now: float) -> Iterator[GaugeMetricFamily]:
        pending = GaugeMetricFamily(
            "calbridge_webhook_inbox_pending",
            "Verified notifications stored and not yet processed.",
            labels=["provider"],
        )
        kept = GaugeMetricFamily(
            "calbridge_webhook_inbox_processed",
            "Processed notifications still kept in the inbox (until purged).",
            labels=["provider"],
        )
        lag = GaugeMetricFamily(
            "calbridge_webhook_inbox_lag_seconds",
            "Age of the oldest unprocessed notification (0: none waiting).",
            labels=["provider"],
        )
        last = GaugeMetricFamily(
            "calbridge_webhook_last_received_timestamp_seconds",
            "When the newest stored notification was received (epoch seconds).",
            labels=["provider"],
        )
        for row in sorted(inbox, key=lambda r: r.provider):
            pending.add_metric([row.provider], row.pending)
            kept.add_metric([row.provider], row.processed)
            oldest = row.oldest_pending_at
            lag.add_metric([row.provider], 0.0 if oldest is None else max(0.0, now - oldest))
            if row.newest_received_at is not None:
                last.add_metric([row.provider], row.newest_received_at)
        yield from (pending, kept, lag, last)

    @staticmethod
    def _budgets(budgets: list[q.BudgetWindow], now: float) -> Iterator[GaugeMetricFamily]:
        labels = ["provider", "app", "window"]
        grants = GaugeMetricFamily(
            "calbridge_rate_budget_grants",
            "Calls granted in the window's stored slots (the last window as of its last "
            "change) of the application's shared rate budget.",
            labels=labels,
        )
        paused = GaugeMetricFamily(
            "calbridge_rate_budget_paused_seconds",
            "Seconds the budget stays paused after a 429 (0: not paused).",
            labels=labels,
        )
        for row in sorted(budgets, key=lambda r: (r.provider, r.app, r.window)):
            key = [row.provider, row.app, row.window]
            grants.add_metric(key, row.grants)
            paused.add_metric(key, max(0.0, row.paused_until_ms / 1000.0 - now))
        yield grants
        yield paused

    @staticmethod
    def _counts(totals: list[CountTotal]) -> Iterator[CounterMetricFamily]:
        rounds = CounterMetricFamily(
            "calbridge_sync_rounds",
            "Sync rounds by provider and outcome (ok, error, cursor_expired: the cursor was "
            "refused and a full read followed), summed over every process.",
            labels=["provider", "outcome"],
        )
        calls = CounterMetricFamily(
            "calbridge_provider_calls",
            "Attempts sent to each provider (retries included) by outcome: the status class "
            "(2xx, 3xx, 4xx, 5xx), 429 apart, or error (no answer: connection failed or "
            "timed out); summed over every process.",
            labels=["provider", "outcome"],
        )
        throttled = CounterMetricFamily(
            "calbridge_provider_throttled",
            "429 answers received from each provider (each pauses its shared rate budget, "
            "when it has one), summed over every process.",
            labels=["provider"],
        )
        for total in totals:
            key = total.key
            if key.name == SYNC_ROUNDS:
                rounds.add_metric([key.provider, key.outcome], total.value)
            elif key.name == PROVIDER_CALLS:
                calls.add_metric([key.provider, key.outcome], total.value)
                if key.outcome == "429":
                    throttled.add_metric([key.provider], total.value)
        yield rounds
        yield calls
        yield throttled


class ConsoleCounters:
    """What this console process counts: logins and operator actions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.logins = Counter(
            "calbridge_console_logins",
            "Console login attempts by outcome (ok, refused).",
            ["outcome"],
            registry=registry,
        )
        self.actions = Counter(
            "calbridge_console_actions",
            "Operator actions confirmed in the console, by action and outcome.",
            ["action", "outcome"],
            registry=registry,
        )
        self.csrf_refused = Counter(
            "calbridge_console_csrf_refused",
            "POSTs refused for a missing or wrong CSRF token (or a foreign Origin).",
            registry=registry,
        )


class WebhookCounter:
    """Counts the webhook receiver's answers in the process that receives them
    (``calbridge serve --metrics-path``): by provider (the first path segment under the
    receiver's mount; ``other`` when it names no installed provider, so a scanner cannot
    grow the label set) and status code."""

    def __init__(self, registry: CollectorRegistry, providers: Iterable[str]) -> None:
        self._providers = frozenset(providers)
        self.requests = Counter(
            "calbridge_webhook_requests",
            "Requests answered by the webhook receiver, by provider and status code "
            "(2xx: stored or already seen; 4xx: rejected; 5xx/503: failed, redelivered).",
            ["provider", "code"],
            registry=registry,
        )

    def wrap(self, app: Any) -> Callable[[Any, Any, Any], Awaitable[None]]:
        """``app`` (the receiver, as mounted) with its answers counted."""

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = str(scope.get("path", ""))
            root = str(scope.get("root_path", ""))
            if root and path.startswith(root):
                path = path[len(root) :]
            first = path.lstrip("/").partition("/")[0]
            provider = first if first in self._providers else "other"

            async def counting_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    self.requests.labels(provider, str(message["status"])).inc()
                await send(message)

            await app(scope, receive, counting_send)

        return counted


def make_registry(engine: Any, *, clock: Callable[[], float] = time.time) -> CollectorRegistry:
    """A registry (not the process-global one) with the store collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(engine, clock=clock))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (reads the store: call it off the event loop)."""
    return generate_latest(registry)


def metrics_endpoint(
    registry: CollectorRegistry, *, token: str | None = None
) -> Callable[[Any], Awaitable[Any]]:
    """A Starlette endpoint serving ``registry``; with ``token``, only to requests that
    carry ``Authorization: Bearer <token>`` (compared in constant time)."""
    import hmac

    from starlette.responses import PlainTextResponse, Response

    from ..store import offload

    expected = f"Bearer {token}".encode() if token is not None else None

    async def metrics(request: Any) -> Response:
        if expected is not None and not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), expected
        ):
            return PlainTextResponse("unauthorized", status_code=401)
        body = await offload(render, registry)
        return Response(body, media_type=CONTENT_TYPE)

    return metrics
