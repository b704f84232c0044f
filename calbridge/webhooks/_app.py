"""The webhook receiver: verify, persist and queue in one transaction, then acknowledge.

``make_webhook_app(runtime)`` is a Starlette app with one route per provider,
``POST /{provider}`` (Graph's validation handshake may also arrive as ``GET``). Mount it
in your own app, e.g. ``app.mount("/calbridge/hooks", make_webhook_app(runtime))`` with
``public_url = "https://app.example.com/calbridge/hooks"``.

For each request: read the raw body (at most ``max_body`` bytes), let the provider verify
it against the stored channel (a store read, never a provider call), then in ONE write
transaction record every notification in the inbox (a duplicate delivery key is a no-op)
and enqueue or coalesce the sync job of each calendar it names; commit; only then answer
the provider's reply (202 unless the provider needs another one). Concurrent requests
share a transaction (group commit), each still atomic with its own jobs.

A provider's "initial sync completed" notification (Cronofy
``profile_initial_sync_completed``) also marks the account's initial sync complete in
its details, in the same transaction (the migration's cutover guard reads it).

Answers: forged or unknown input 4xx (nothing stored), malformed or oversized 4xx,
store unavailable 503 (the sender retries), never a 5xx for bad input.

Unauthenticated input cannot amplify into store work: a batch (Graph's ``{"value": [...]}``)
of more than :data:`MAX_BATCH_ITEMS` items is refused (413) before any lookup, the
channels a batch names are read in one query (not one per item), and a request that
makes a provider look up more than :data:`MAX_LOOKUPS` other channels is refused (400).
When the store stays locked (SQLite busy, a PostgreSQL lock) for ``store_timeout``
seconds the answer is 503 with ``Retry-After``; a commit still under way then lands
later, and the redelivery is recognised as a duplicate. Every answer carries the security
headers of :mod:`calbridge._asgi`; a body read stalled for 10 s is answered 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .._asgi import SecureApp
from .._tracing import PROVIDER, SpanKind, span
from ..errors import NotificationRejected, ProviderNotFoundError, StoreError
from ..jobs import enqueue_coalesced
from ..models import AccountStatus, Channel
from ..provider import Notification, NotificationKind, WebhookReply, WebhookRequest
from ..store import (
    Connection,
    DatabaseError,
    checkpoint_wal,
    defer_wal_checkpoint,
    is_sqlite,
    offload,
)

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_STORE_TIMEOUT",
    "MAX_BATCH_ITEMS",
    "MAX_LOOKUPS",
    "WebhookReceiver",
    "make_webhook_app",
]

log = logging.getLogger("calbridge.webhooks")

#: the largest body accepted (bytes)
DEFAULT_MAX_BODY: Final = 1024 * 1024
#: items of one batch (Graph sends at most a few hundred per POST); more is 413
MAX_BATCH_ITEMS: Final = 1000
#: channels a provider may look up one by one while verifying one request
MAX_LOOKUPS: Final = 16
#: seconds verification and commit may wait for the store before the answer is 503
DEFAULT_STORE_TIMEOUT: Final = 5.0
#: the Retry-After (seconds) of a 503
RETRY_AFTER: Final = 5
#: how long a channel read stays cached (seconds)
CHANNEL_TTL: Final = 2.0
#: SQLite: WAL pages before a commit checkpoints by itself (SQLite's default is 1,000); the
#: receiver checkpoints in the background instead, so no acknowledgement waits for one
WAL_AUTOCHECKPOINT: Final = 10_000
#: seconds between background checkpoints while deliveries arrive
CHECKPOINT_EVERY: Final = 0.5
#: seconds the committer waits for more deliveries to share a commit
DEFAULT_LINGER: Final = 0.002
#: seconds a webhook-triggered sync waits for more notifications of its calendar
#: (``calbridge serve`` uses 2 s; 0 runs the sync as soon as a worker is free)
DEFAULT_DEBOUNCE: Final = 0.0
_NO_STORE: Final = frozenset(
    {NotificationKind.VERIFICATION, NotificationKind.SYNC, NotificationKind.IGNORED}
)
_SYNC_KINDS: Final = frozenset(
    {
        NotificationKind.CHANGE,
        NotificationKind.RESYNC,
        NotificationKind.INITIAL_SYNC_COMPLETED,
        NotificationKind.RESUBSCRIBE,
    }
)


class _StoreDown(Exception):
    """The store could not be read or written."""


class _TooManyLookups(Exception):
    """A request made the provider look up more than MAX_LOOKUPS channels."""


_DB_ERRORS: Final = (DatabaseError, StoreError, OSError)


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def _unavailable() -> Response:
    return Response(
        "store unavailable\n",
        status_code=503,
        media_type="text/plain",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a commit nobody waits for any more (no asyncio warning)."""
    if not task.cancelled():
        task.exception()


def _batch_ids(body: bytes) -> list[str] | None:
    """The subscription ids of a ``{"value": [...]}`` batch, or None for another body.

    Raises ValueError for a batch of more than MAX_BATCH_ITEMS items."""
    if b'"value"' not in body:
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None  # the provider answers malformed bodies itself
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return None
    if len(items) > MAX_BATCH_ITEMS:
        raise ValueError(len(items))
    ids = {i.get("subscriptionId") for i in items if isinstance(i, dict)}
    return sorted(i for i in ids if isinstance(i, str) and i)


@attrs.define
class _Pending:
    provider: str
    notifications: Sequence[Notification]
    future: asyncio.Future[list[Any]]


class WebhookReceiver:
    """The receiver behind :func:`make_webhook_app` (exposes counters for tests/bench)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        max_group: int = 256,
        debounce: float = DEFAULT_DEBOUNCE,
        linger: float = DEFAULT_LINGER,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        self.runtime = runtime
        self.store_timeout = store_timeout
        #: channel reads that went to the store (one per batch, or per single lookup)
        self.store_lookups = 0
        self.linger = linger
        self.max_body = max_body
        self.debounce = debounce
        self.max_group = max_group
        self.accepted = 0
        self.rejected = 0
        #: write transactions committed, and the deliveries they carried (group commit)
        self.commits = 0
        self.committed = 0
        self._queue: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._dirty = False
        self._channels: dict[tuple[str, str], tuple[float, Channel | None]] = {}

    # ------------------------------------------------------------ ASGI

    def app(self) -> Starlette:
        """The Starlette app (one route per provider: ``/{provider}``)."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            await self.aclose()

        return SecureApp(
            routes=[Route("/{provider}", self.endpoint, methods=["POST", "GET"])],
            lifespan=lifespan,
        )

    async def aclose(self) -> None:
        """Finish pending commits and stop the background tasks (idempotent)."""
        if self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._checkpointer is not None and not self._checkpointer.done():
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)

    async def endpoint(self, request: Request) -> Response:
        """Handle one delivery (an OpenTelemetry server span, ``calbridge.webhook``, with
        the provider and the answer's status)."""
        name = str(request.path_params["provider"])
        with span("calbridge.webhook", kind=SpanKind.SERVER, **{PROVIDER: name}) as current:
            response = await self._endpoint(request, name)
            if current is not None and current.is_recording():
                current.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 400:
                    current.set_attribute("error.type", str(response.status_code))
            return response

    async def _endpoint(self, request: Request, name: str) -> Response:
        try:
            provider = self.runtime.provider(name)
        except ProviderNotFoundError:
            return _plain(404, "unknown provider")
        if provider.name != name:
            return _plain(404, "unknown provider")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            self.rejected += 1
            return _plain(413, "body too large")
        try:
            body = await self._read(request)
        except ClientDisconnect:
            return _plain(400, "client disconnected")
        if body is None:
            self.rejected += 1
            return _plain(413, "body too large")
        try:
            batch = _batch_ids(body)
        except ValueError:
            self.rejected += 1
            return _plain(413, f"too many items (at most {MAX_BATCH_ITEMS})")
        incoming = WebhookRequest.build(
            method=request.method,
            headers=list(request.headers.items()),
            body=body,
            query=dict(request.query_params),
        )
        deadline = asyncio.get_running_loop().time() + self.store_timeout
        seen: dict[str, Channel | None] = {}
        singles = 0

        async def lookup(channel_id: str) -> Channel | None:
            nonlocal singles
            if channel_id in seen:
                return seen[channel_id]
            singles += 1
            if singles > MAX_LOOKUPS:
                raise _TooManyLookups
            seen[channel_id] = await self._lookup(name, channel_id)
            return seen[channel_id]

        try:
            async with asyncio.timeout_at(deadline):
                if batch:
                    seen.update(await self._lookup_many(name, batch))
                notifications = await provider.verify_notification(incoming, lookup)
        except (_StoreDown, TimeoutError):
            return _unavailable()
        except _TooManyLookups:
            self.rejected += 1
            return _plain(400, f"too many channels in one request (at most {MAX_LOOKUPS})")
        except NotificationRejected as exc:
            self.rejected += 1
            status = exc.status if exc.status and 400 <= exc.status < 500 else 401
            if exc.status and exc.status >= 500:
                log.error("%s notifications cannot be verified: %s", name, exc)
            return _plain(status, "rejected")
        except Exception:
            self.rejected += 1
            log.warning("%s notification could not be parsed", name, exc_info=True)
            return _plain(400, "malformed notification")
        # shielded: a commit under way still finishes (its redelivery is a duplicate)
        persisting = asyncio.ensure_future(self._persist(name, notifications))
        persisting.add_done_callback(_consume)
        try:
            async with asyncio.timeout_at(deadline):
                disconnected = await asyncio.shield(persisting)
        except (_StoreDown, TimeoutError):
            log.warning("%s delivery answered 503: the store stayed unavailable", name)
            return _unavailable()
        self.accepted += 1
        for account, old in disconnected:
            try:
                self.runtime.host.notify_account_status_changed(
                    account, old, "profile_disconnected"
                )
            except Exception:
                log.exception("account_status_changed hook failed")
        reply = _reply(notifications)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)

    async def _read(self, request: Request) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------ channels

    def forget_channels(self) -> None:
        """Drop the short-lived channel cache (after channels changed in this process)."""
        self._channels.clear()

    async def _lookup_many(self, provider: str, ids: Sequence[str]) -> dict[str, Channel | None]:
        """Every channel a batch names, in one query per 500 ids (cached like _lookup)."""
        now = time.monotonic()
        out: dict[str, Channel | None] = {}
        missing: list[str] = []
        for channel_id in ids:
            hit = self._channels.get((provider, channel_id))
            if hit is not None and hit[0] > now:
                out[channel_id] = hit[1]
            else:
                missing.append(channel_id)
        if not missing:
            return out
        self.store_lookups += 1
        try:
            found = await offload(self._read_channels, provider, missing)
        except _DB_ERRORS as exc:
            log.warning("channel lookup failed: %s", type(exc).__name__)
            raise _StoreDown from None
        if len(self._channels) > 10_000:
            self._channels.clear()
        for channel_id in missing:
            out[channel_id] = found.get(channel_id)
            self._channels[(provider, channel_id)] = (now + CHANNEL_TTL, out[channel_id])
        return out

    def _read_channels(self, provider: str, ids: Sequence[str]) -> dict[str, Channel | None]:
        store = self.runtime.store
        return {
            rec.channel.id: rec.channel
            for rec in store.channels.channels_by_ids(provider, ids)
            if rec.health not in ("polling", "pending")
        }

    async def _lookup(self, provider: str, channel_id: str) -> Channel | None:
        key = (provider, channel_id)
        now = time.monotonic()
        hit = self._channels.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        self.store_lookups += 1
        try:
            rec = await offload(self.runtime.store.channels.get_channel, provider, channel_id)
        except _DB_ERRORS as exc:
            log.warning("channel lookup failed: %s", type(exc).__name__)
            raise _StoreDown from None
        channel = None
        if rec is not None and rec.health not in ("polling", "pending"):
            channel = rec.channel
        if len(self._channels) > 10_000:
            self._channels.clear()
        self._channels[key] = (now + CHANNEL_TTL, channel)
        return channel

    # ------------------------------------------------------------ persistence

    async def _persist(self, provider: str, notifications: Sequence[Notification]) -> list[Any]:
        if all(n.kind in _NO_STORE for n in notifications):
            return []
        loop = asyncio.get_running_loop()
        pending = _Pending(provider, notifications, loop.create_future())
        self._queue.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        if is_sqlite(self.runtime.engine) and (
            self._checkpointer is None or self._checkpointer.done()
        ):
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())
        return await pending.future

    async def _write_loop(self) -> None:
        while self._queue:
            if self.linger and len(self._queue) < self.max_group:
                # under load, let a few more deliveries join this commit
                await asyncio.sleep(self.linger)
            group, self._queue = self._queue[: self.max_group], self._queue[self.max_group :]
            try:
                results = await offload(self._write_group, group)
            except Exception as exc:
                log.warning("webhook commit failed: %s", type(exc).__name__)
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(_StoreDown())
                continue
            self.commits += 1
            self.committed += len(group)
            for item, result in zip(group, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    async def _checkpoint_loop(self) -> None:
        """SQLite: copy the WAL back into the database off the request path.

        A commit that crosses the auto-checkpoint threshold checkpoints (and fsyncs the
        database file) before it returns, stalling every acknowledgement behind it for
        tens to hundreds of milliseconds. The receiver's connections raise the threshold
        (bounded, so the WAL still cannot grow without limit) and this task checkpoints
        PASSIVE-ly (never blocking writers) while deliveries arrive; it ends when idle.
        """
        idle = 0
        while idle < 10:
            await asyncio.sleep(CHECKPOINT_EVERY)
            if not self._dirty:
                idle += 1
                continue
            idle = 0
            self._dirty = False
            try:
                await offload(self._checkpoint)
            except Exception as exc:
                log.debug("background checkpoint failed: %s", type(exc).__name__)

    def _checkpoint(self) -> None:
        checkpoint_wal(self.runtime.engine)

    def _write_group(self, group: Sequence[_Pending]) -> list[list[Any]]:
        def run(conn: Connection) -> list[list[Any]]:
            return self._write_tx(conn, group)

        try:
            out: list[list[Any]] = self.runtime.queue.transact(run)
        except _DB_ERRORS as exc:
            raise _StoreDown from exc
        return out

    def _write_tx(self, conn: Connection, group: Sequence[_Pending]) -> list[list[Any]]:
        """Inbox rows for every notification of the group, then each distinct job once."""
        if defer_wal_checkpoint(conn, WAL_AUTOCHECKPOINT):
            self._dirty = True
        store = self.runtime.store
        now = self.runtime.clock()
        work: dict[str, tuple[str, dict[str, Any]]] = {}
        touched: set[tuple[str, str]] = set()
        results: list[list[Any]] = []
        for pending in group:
            disconnected: list[Any] = []
            for n in pending.notifications:
                if n.kind in _NO_STORE:
                    continue
                new = store.channels.record_delivery(
                    conn,
                    provider=pending.provider,
                    delivery_key=n.delivery_key,
                    kind=str(n.kind),
                    channel_id=n.channel_id,
                    account_id=n.account_id,
                    payload={
                        "kind": str(n.kind),
                        "calendar_ids": list(n.calendar_ids),
                        "changes_since": n.changes_since,
                    },
                    received_at=int(now),
                )
                if new is None:
                    continue  # a duplicate: already recorded and queued
                if n.channel_id:
                    touched.add((pending.provider, n.channel_id))
                if not n.account_id:
                    continue
                _plan(work, pending.provider, n)
                if n.kind is NotificationKind.PROFILE_DISCONNECTED:
                    changed = store.accounts.set_account_status(
                        n.account_id,
                        AccountStatus.NEEDS_REAUTH,
                        reason="profile_disconnected",
                        conn=conn,
                    )
                    if changed is not None:
                        disconnected.append(changed)
                elif n.kind is NotificationKind.INITIAL_SYNC_COMPLETED:
                    # what the migration's initial-sync guard waits for (Cronofy
                    # profile_initial_sync_completed), stored with the delivery
                    from ..migration._guards import record_initial_sync

                    record_initial_sync(
                        store,
                        n.account_id,
                        required=False,
                        source="notification",
                        at=now,
                        conn=conn,
                    )
            results.append(disconnected)
        for key, (kind, payload) in work.items():
            delay = self.debounce if kind == "sync" else 0.0
            enqueue_coalesced(conn, kind, payload, coalesce_key=key, now=now, delay=delay)
        for provider, channel_id in touched:
            store.channels.touch_channel(conn, provider, channel_id, int(now))
        return results


def _plan(work: dict[str, tuple[str, dict[str, Any]]], provider: str, n: Notification) -> None:
    """The jobs one new notification asks for, keyed by their coalescing key."""
    account = n.account_id
    if n.kind in _SYNC_KINDS:
        for cal in n.calendar_ids or (None,):
            work[f"sync:{account}:{cal or '*'}"] = ("sync", {"account": account, "calendar": cal})
    if n.kind in (NotificationKind.RENEW, NotificationKind.RESUBSCRIBE) and n.channel_id:
        work[f"renew:{provider}:{n.channel_id}"] = (
            "renew_channels",
            {
                "provider": provider,
                "channel": n.channel_id,
                "recreate": n.kind is NotificationKind.RESUBSCRIBE,
            },
        )


def _reply(notifications: Sequence[Notification]) -> WebhookReply:
    for n in notifications:
        if n.kind is NotificationKind.VERIFICATION:
            return n.reply
    return notifications[0].reply if notifications else WebhookReply()


def make_webhook_app(
    runtime: Runtime,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    debounce: float = DEFAULT_DEBOUNCE,
    store_timeout: float = DEFAULT_STORE_TIMEOUT,
) -> Starlette:
    """The webhook receiver as an ASGI app (see the module docstring).

    ``debounce``: a sync job queued by a notification runs this many seconds later, so
    a burst of notifications for one calendar (which coalesce into that one queued job)
    costs one provider read, not one per notification. The receiver object is reachable
    as ``app.state.receiver``. ``store_timeout``: seconds a delivery may wait for the
    store (verification and commit together) before it is answered 503 + Retry-After.
    """
    receiver = WebhookReceiver(
        runtime, max_body=max_body, debounce=debounce, store_timeout=store_timeout
    )
    app = receiver.app()
    app.state.receiver = receiver
    return app
