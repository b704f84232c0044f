"""The change pipeline as one object: engine, channel manager, dispatcher, job handlers.

::

    service = SyncService(runtime, outbound=OutboundWebhook(url, secret))
    service.on_changes(my_async_callback)          # CalBridge.on_changes delegates here
    worker = Worker(runtime.queue, service.handlers)
    app = make_webhook_app(runtime)                # calbridge.webhooks
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx

from .. import jobs
from .._budget import background_calls
from ..errors import ReauthRequired
from ..models import Secret
from ..store import offload
from ._batch import ChangeBatch, batch_from_json, sign_standard_webhook
from ._channels import PURGE_INBOX, PURGE_INBOX_BATCH, ChannelManager
from ._engine import DELIVER_KIND, SEND_KIND, CursorMoved, SyncEngine, calendar_key

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ..store import StoreRuntime

__all__ = [
    "ChangeCallback",
    "ChangeDispatcher",
    "OutboundWebhook",
    "SyncService",
    "build_handlers",
]

log = logging.getLogger("calbridge.sync")

#: an application callback receiving committed change batches
ChangeCallback = Callable[[ChangeBatch], Awaitable[object] | object]

#: job kinds handled by :func:`build_handlers`
HANDLER_KINDS: Final = (
    "sync",
    "reconcile",
    "poll",
    "renew_channels",
    DELIVER_KIND,
    SEND_KIND,
)


class ChangeDispatcher:
    """Hands committed batches to the ``changes_synced`` hook and to registered callbacks.

    At-least-once: an exception from any receiver fails the delivery job, which is retried
    with backoff, and every receiver sees the batch again (same ``batch.id``).
    """

    def __init__(self, host: Any | None = None) -> None:
        self.host = host
        self._callbacks: list[ChangeCallback] = []

    def on_changes(self, callback: ChangeCallback) -> Callable[[], None]:
        """Register ``callback(batch)`` (sync or async); returns a function removing it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    async def dispatch(self, batch: ChangeBatch) -> None:
        """Deliver one batch to the hook, then to every callback in registration order."""
        if self.host is not None:
            self.host.load()
            self.host.pm.hook.changes_synced(batch=batch)
        for callback in list(self._callbacks):
            result = callback(batch)
            if inspect.isawaitable(result):
                await result


@attrs.frozen(kw_only=True)
class OutboundWebhook:
    """Where committed batches are POSTed, signed per the Standard Webhooks spec.

    ``secret`` is a ``whsec_`` base64 secret (:func:`generate_webhook_secret`).
    """

    url: str
    secret: Secret
    timeout: float = 15.0


class SyncService:
    """The change pipeline of one runtime.

    Attributes:
        engine: :class:`SyncEngine` (sync rounds).
        channels: :class:`ChannelManager` (connect/disconnect entry points).
        dispatcher: :class:`ChangeDispatcher` (``on_changes``).
        handlers: a :class:`calbridge.jobs.HandlerRegistry` with every kind of this
            pipeline; give it to :class:`calbridge.jobs.Worker`.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        outbound: OutboundWebhook | None = None,
        dispatcher: ChangeDispatcher | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.outbound = outbound
        kwargs: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
        self.engine = SyncEngine(runtime, outbound=outbound is not None, **kwargs)
        self.channels = ChannelManager(runtime)
        self.dispatcher = dispatcher or ChangeDispatcher(runtime.host)
        self.handlers = build_handlers(self)

    def on_changes(self, callback: ChangeCallback) -> Callable[[], None]:
        """Register an application callback for committed change batches."""
        return self.dispatcher.on_changes(callback)

    async def send_webhook(self, batch_json: dict[str, Any]) -> None:
        """POST one batch to the outbound URL (raises to retry; 410 drops it)."""
        out = self.outbound
        if out is None:
            return
        body = json.dumps(batch_json, separators=(",", ":"), sort_keys=True).encode()
        msg_id = str(batch_json["id"])
        ts = int(self.runtime.clock())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign_standard_webhook(
                out.secret, msg_id=msg_id, timestamp=ts, body=body
            ),
        }
        response = await self.runtime.http.post(
            out.url, content=body, headers=headers, timeout=out.timeout
        )
        if response.status_code == 410:
            log.warning("outbound webhook endpoint answered 410: batch %s dropped", msg_id)
            return
        if response.status_code >= 300:
            retry_after = _retry_after(response)
            if retry_after is not None:
                raise jobs.RetryLater(retry_after, f"outbound webhook {response.status_code}")
            raise OutboundFailed(f"outbound webhook answered {response.status_code}")


class OutboundFailed(Exception):
    """The application's endpoint did not accept a batch (the job retries)."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    if value.isdigit():
        return min(float(value), 3600.0)
    return None


def _payload_str(job: jobs.Job, key: str) -> str:
    value = job.payload.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"job {job.id} ({job.kind}) has no {key!r}")
    return value


def build_handlers(service: SyncService) -> jobs.HandlerRegistry:
    """The job handlers of the change pipeline (``sync``, ``reconcile``, ``poll``,
    ``renew_channels``, ``deliver_changes``, ``send_webhook``)."""
    registry = jobs.HandlerRegistry()
    rt = service.runtime
    engine = service.engine

    def enqueue_tx(kind: str, payload: dict[str, Any], *, coalesce: str, serial: str) -> None:
        def run(conn: Any) -> int:
            return jobs.enqueue(
                conn, kind, payload, coalesce_key=coalesce, serial_key=serial, now=rt.clock()
            )

        rt.queue.transact(run)

    async def sync(job: jobs.Job) -> object:
        account = _payload_str(job, "account")
        calendar = job.payload.get("calendar")
        if not calendar:
            # a channel over all calendars: fan out to each known calendar
            for cal in await offload(_calendars_of, rt, account):
                await offload(
                    enqueue_tx,
                    "sync",
                    {"account": account, "calendar": cal},
                    coalesce=calendar_key(account, cal),
                    serial=calendar_key(account, cal),
                )
            return None
        try:
            result = await engine.sync(
                account, str(calendar), full=bool(job.payload.get("full")), job=job
            )
        except CursorMoved:
            raise jobs.RetryLater(0.5, "another round committed first") from None
        except ReauthRequired:
            # the token source marked the account needs_reauth (and fired the hook);
            # retrying cannot help until the user reconnects
            log.warning(
                "sync of %s/%s skipped: the account needs re-authorization", account, calendar
            )
            return {"skipped": "needs_reauth"}
        return attrs.asdict(result, recurse=False)

    async def reconcile(job: jobs.Job) -> object:
        account = _payload_str(job, "account")
        calendar = _payload_str(job, "calendar")
        far = bool(job.payload.get("far_edge"))
        if job.payload.get("tick"):
            payload = {"account": account, "calendar": calendar, "far_edge": far}
            mode = "far_edge" if far else "full"
            await offload(
                enqueue_tx,
                "reconcile",
                payload,
                coalesce=f"reconcile:{mode}:{account}:{calendar}",
                serial=calendar_key(account, calendar),
            )
            return None
        try:
            if far:
                acct = await offload(rt.store.accounts.get_account, account)
                window = None if acct is None else service.channels.far_edge_window(acct.provider)
                if window is None:
                    return None
                result = await engine.reconcile_window(account, calendar, window, job=job)
            else:
                result = await engine.sync(account, calendar, full=True, job=job)
        except CursorMoved:
            raise jobs.RetryLater(0.5, "another round committed first") from None
        await service.channels.after_reconcile(account, calendar, result.changed)
        return attrs.asdict(result, recurse=False)

    async def poll(job: jobs.Job) -> object:
        account = _payload_str(job, "account")
        calendar = _payload_str(job, "calendar")
        await offload(
            enqueue_tx,
            "sync",
            {"account": account, "calendar": calendar},
            coalesce=calendar_key(account, calendar),
            serial=calendar_key(account, calendar),
        )
        return None

    async def renew_channels(job: jobs.Job) -> object:
        provider = job.payload.get("provider")
        channel = job.payload.get("channel")
        if provider and channel:
            return await service.channels.renew_channel(
                str(provider), str(channel), recreate=bool(job.payload.get("recreate"))
            )
        return await service.channels.maintain()

    async def purge_inbox(job: jobs.Job) -> object:
        # in batches: on SQLite one long delete would hold the only write lock the
        # webhook receiver needs
        before = int(rt.clock() - float(rt.config.inbox_retention))
        purged = 0
        while True:
            went = await offload(
                rt.store.channels.inbox_purge, received_before=before, limit=PURGE_INBOX_BATCH
            )
            purged += went
            if went < PURGE_INBOX_BATCH:
                break
        if purged:
            log.info("deleted %d webhook inbox rows received before %d", purged, before)
        return {"purged": purged}

    async def deliver(job: jobs.Job) -> object:
        await service.dispatcher.dispatch(batch_from_json(job.payload))
        return None

    async def send(job: jobs.Job) -> object:
        await service.send_webhook(job.payload)
        return None

    # sync and reconcile are background work: they leave the rate budget's reserve to
    # user-facing calls (see calbridge/_budget.py)
    registry.add("sync", _background(sync))
    registry.add("reconcile", _background(reconcile))
    registry.add("poll", poll)
    registry.add("renew_channels", renew_channels)
    registry.add(PURGE_INBOX, purge_inbox)
    registry.add(DELIVER_KIND, deliver)
    registry.add(SEND_KIND, send)
    return registry


def _calendars_of(rt: StoreRuntime, account_id: str) -> list[str]:
    return rt.store.events.calendar_ids(account_id)


async def drain(worker: jobs.Worker, *, rounds: int = 50) -> int:
    """Run ``worker`` until no job is runnable (tests and one-shot use)."""
    total = 0
    for _ in range(rounds):
        ran = await worker.run_until_idle()
        total += ran
        if ran == 0:
            break
        await asyncio.sleep(0)
    return total


def _background(handler: jobs.Handler) -> jobs.Handler:
    """``handler`` with its provider calls counted as background work in the rate budget."""

    async def run(job: jobs.Job) -> object:
        with background_calls():
            return await handler(job)

    return run
