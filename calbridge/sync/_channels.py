"""The channel manager: push channels per calendar, their health, and the polling fallback.

Every channel row carries a health state:

``pending``   a subscribe is under way (or failed and will be retried);
``active``    the provider pushes to the webhook receiver;
``renewing``  being renewed (Google: an overlapping new channel, then the old one stops);
``failing``   renewal failed, or the channel stayed silent while reconciliation found
              changes: the account is polled meanwhile and the channel is recreated;
``closed``    expired or closed by the provider: polled until a new channel is open;
``polling``   the pseudo-channel ``poll:<account>`` of an account whose changes are polled
              (no public callback URL, a provider that cannot push, or a broken channel).

Whether an account is pushed or polled is decided by the ``make_change_source`` hook
(provider plugins answer push; ``calbridge_polling`` answers poll, last), never here.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, ParamSpec, TypeVar

import attrs

from .. import jobs
from ..errors import CalbridgeError, NotFound
from ..models import Account, Channel, TimeRange
from ..provider import ChannelRequest
from ..store import Store, offload, write

if TYPE_CHECKING:
    from .._runtime import Runtime

__all__ = [
    "FAR_EDGE_DAYS",
    "HEALTH_STATES",
    "ChannelManager",
]

log = logging.getLogger("calbridge.channels")

_P = ParamSpec("_P")
_R = TypeVar("_R")

HEALTH_STATES: Final = ("pending", "active", "renewing", "failing", "closed", "polling")
#: read window of the far-edge reconciliation per provider (days ahead); a provider
#: option ``far_edge_days = [from, to]`` overrides it
FAR_EDGE_DAYS: Final[dict[str, tuple[int, int]]] = {"cronofy": (194, 201)}
#: renew channels this long before they expire
DEFAULT_RENEW_MARGIN: Final = 6 * 3600.0
#: how often the channel maintenance job runs
RENEW_EVERY: Final = 900.0
#: the recurring job that deletes webhook inbox rows older than ``inbox_retention``
PURGE_INBOX: Final = "purge_inbox"
PURGE_INBOX_EVERY: Final = 3600.0
#: rows deleted per write transaction by the purge
PURGE_INBOX_BATCH: Final = 1000
#: a channel silent for this long while reconciliation finds changes is unhealthy
SILENCE: Final = 3600.0

POLL_PREFIX: Final = "poll:"
PENDING_PREFIX: Final = "pending:"


def _key(*parts: str) -> str:
    return ":".join(parts)


@attrs.define
class ChannelManager:
    """Opens, renews, repairs and closes the channels of the runtime's accounts.

    Entry points for the bridge: :meth:`on_account_connected`,
    :meth:`on_account_disconnected`; the job handlers call :meth:`maintain`,
    :meth:`renew_channel` and :meth:`after_reconcile`.
    """

    runtime: Runtime
    renew_margin: float = DEFAULT_RENEW_MARGIN
    rng: random.Random = attrs.field(factory=random.Random)

    @property
    def store(self) -> Store:
        """The runtime's store."""
        return self.runtime.store

    def _now(self) -> float:
        return float(self.runtime.clock())

    async def _db(self, fn: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await offload(fn, *args, **kwargs)

    # ------------------------------------------------------------ connect / disconnect

    async def on_account_connected(
        self, account_id: str, calendar_ids: Sequence[str] | None = None
    ) -> str:
        """Start observing an account: first sync, reconciliation, then push or polling.

        Returns ``"push"`` or ``"poll"`` (what the account got). Safe to call again.
        """
        rt = self.runtime
        account: Account = await self._db(rt.account, account_id)
        provider = rt.provider(account.provider)
        if calendar_ids is None:
            calendars = await provider.list_calendars(rt.session(account))
            calendar_ids = [c.id for c in calendars]
        cals = list(calendar_ids)
        await self._db(self._register_calendars, account, cals)
        source = rt.host.make_change_source(provider, rt.config.callback_url(provider.name))
        if source.kind == "push":
            if await self.open_push(account, cals):
                return "push"
            await self._db(self.start_polling, account, cals, None, "subscribe failed")
            return "poll"
        await self._db(self.start_polling, account, cals, source.interval_seconds, source.reason)
        return "poll"

    def _register_calendars(self, account: Account, cals: Sequence[str]) -> None:
        assert account.id is not None
        now = self._now()
        reconcile = float(self.runtime.config.reconcile_interval)
        far = self._far_edge(account.provider)
        with write(self.store.engine) as conn:
            known = set(self.store.events.calendar_ids(account.id, conn=conn))
            for cal in cals:
                if cal not in known:
                    self.store.events.set_cursor(account.id, cal, None, conn=conn)
                jobs.enqueue(
                    conn,
                    "sync",
                    {"account": account.id, "calendar": cal},
                    coalesce_key=_sync_key(account.id, cal),
                    now=now,
                )
                jobs.ensure_schedule(
                    conn,
                    _key("reconcile", account.id, cal),
                    "reconcile",
                    {"account": account.id, "calendar": cal, "tick": True},
                    every=reconcile,
                    first_run_at=now + reconcile * (0.5 + self.rng.random() / 2),
                    now=now,
                )
                if far is not None:
                    every = min(reconcile, 86400.0)
                    jobs.ensure_schedule(
                        conn,
                        _key("far_edge", account.id, cal),
                        "reconcile",
                        {"account": account.id, "calendar": cal, "tick": True, "far_edge": True},
                        every=every,
                        first_run_at=now + every * self.rng.random(),
                        now=now,
                    )
            jobs.ensure_schedule(
                conn, "renew_channels", "renew_channels", {}, every=RENEW_EVERY, now=now
            )
            jobs.ensure_schedule(
                conn, PURGE_INBOX, PURGE_INBOX, {}, every=PURGE_INBOX_EVERY, now=now
            )

    def _far_edge(self, provider: str) -> tuple[int, int] | None:
        try:
            option = self.runtime.provider(provider).settings.option("far_edge_days")
        except CalbridgeError:
            option = None
        if option is not None:
            lo, hi = option
            return int(lo), int(hi)
        return FAR_EDGE_DAYS.get(provider)

    def far_edge_window(self, provider: str) -> TimeRange | None:
        """The far-edge reconciliation window of ``provider`` from now, or None."""
        days = self._far_edge(provider)
        if days is None:
            return None
        now = dt.datetime.fromtimestamp(self._now(), dt.UTC)
        return TimeRange(
            start=now + dt.timedelta(days=days[0]), end=now + dt.timedelta(days=days[1])
        )

    async def on_account_disconnected(self, account_id: str) -> None:
        """Close the account's channels at the provider and stop every job schedule."""
        rt = self.runtime
        records = await self._db(self.store.channels.list_channels, account_id=account_id)
        account = await self._db(self.store.accounts.get_account, account_id)
        for rec in records:
            ch: Channel = rec.channel
            if account is not None and not ch.id.startswith((POLL_PREFIX, PENDING_PREFIX)):
                try:
                    await rt.provider(ch.provider).unsubscribe(rt.session(account), ch)
                except CalbridgeError as exc:
                    log.warning("closing channel %s failed: %s", ch.id, type(exc).__name__)
            await self._db(self.store.channels.delete_channel, ch.provider, ch.id)
        await self._db(self._drop_schedules, account_id, None)

    def park_account(self, account_id: str) -> int:
        """Stop an account's work while it cannot be served (e.g. it needs re-authorization).

        Its recurring schedules are dropped and its queued jobs removed, so nothing keeps
        calling the provider with a dead token; connecting the account again
        (:meth:`on_account_connected`) starts everything afresh. Returns the jobs removed.
        """
        self._drop_schedules(account_id, None)
        with write(self.store.engine) as conn:
            return jobs.remove_queued(conn, key_part=account_id)

    def _drop_schedules(self, account_id: str, kind: str | None) -> None:
        with write(self.store.engine) as conn:
            jobs.remove_schedules(conn, key_part=account_id, kind=kind)

    # ------------------------------------------------------------ push

    async def open_push(self, account: Account, cals: Sequence[str]) -> bool:
        """Subscribe one channel per calendar; True when all are open."""
        rt = self.runtime
        assert account.id is not None
        provider = rt.provider(account.provider)
        callback = rt.config.callback_url(provider.name)
        if not callback:
            return False
        existing = await self._db(self.store.channels.list_channels, account_id=account.id)
        covered = {
            c
            for rec in existing
            if rec.health in ("active", "renewing")
            for c in rec.channel.calendar_ids
        }
        ok = True
        for cal in cals:
            if cal in covered:
                continue
            pending = Channel(
                provider=provider.name,
                id=f"{PENDING_PREFIX}{account.id}:{cal}",
                callback_url=callback,
                account_id=account.id,
                calendar_ids=(cal,),
            )
            await self._db(self.store.channels.save_channel, pending, health="pending")
            try:
                channel = await provider.subscribe(
                    rt.session(account), ChannelRequest(callback_url=callback, calendar_ids=(cal,))
                )
            except CalbridgeError as exc:
                log.warning("subscribing %s/%s failed: %s", account.id, cal, exc)
                await self._db(
                    self.store.channels.set_channel_health,
                    provider.name,
                    pending.id,
                    "pending",
                    reason=f"subscribe failed: {type(exc).__name__}",
                    failed=True,
                )
                ok = False
                continue
            channel = attrs.evolve(channel, account_id=account.id)
            await self._db(self._replace, pending, channel)
        if ok:
            await self._db(self.stop_polling, account)
        return ok

    def _replace(self, old: Channel, new: Channel, health: str = "active") -> None:
        with write(self.store.engine) as conn:
            self.store.channels.save_channel(new, health=health, conn=conn)
            if old.id != new.id:
                self.store.channels.delete_channel(old.provider, old.id, conn=conn)

    async def renew_channel(
        self, provider_name: str, channel_id: str, *, recreate: bool = False
    ) -> bool:
        """Renew (or recreate) one channel; True when a live channel results."""
        rt = self.runtime
        rec = await self._db(self.store.channels.get_channel, provider_name, channel_id)
        if rec is None:
            return False
        channel: Channel = rec.channel
        account = await self._db(self.store.accounts.get_account, channel.account_id or "")
        if account is None:
            await self._db(self.store.channels.delete_channel, provider_name, channel_id)
            return False
        if channel.id.startswith(PENDING_PREFIX):
            return await self.open_push(account, channel.calendar_ids)
        provider = rt.provider(provider_name)
        session = rt.session(account)
        await self._db(
            self.store.channels.set_channel_health, provider_name, channel_id, "renewing"
        )
        try:
            if recreate:
                fresh = await provider.subscribe(
                    session,
                    ChannelRequest(
                        callback_url=channel.callback_url,
                        calendar_ids=channel.calendar_ids,
                        filters=channel.filters,
                    ),
                )
            else:
                try:
                    fresh = await provider.renew(session, channel)
                except NotFound:
                    fresh = await provider.subscribe(
                        session,
                        ChannelRequest(
                            callback_url=channel.callback_url,
                            calendar_ids=channel.calendar_ids,
                            filters=channel.filters,
                        ),
                    )
        except CalbridgeError as exc:
            now = self._now()
            expired = channel.expires_at is not None and channel.expires_at <= now
            health = "closed" if expired else "failing"
            log.warning("renewing channel %s failed (%s): %s", channel_id, health, exc)
            await self._db(
                self.store.channels.set_channel_health,
                provider_name,
                channel_id,
                health,
                reason=f"renew failed: {type(exc).__name__}",
                failed=True,
            )
            if expired:
                await self._db(
                    self.start_polling, account, channel.calendar_ids, None, "channel closed"
                )
            return False
        fresh = attrs.evolve(fresh, account_id=account.id)
        await self._db(self._replace, channel, fresh)
        await self._db(self._maybe_stop_polling, account)
        # a recreated channel may have missed changes: read them now
        await self._db(self._enqueue_syncs, account, fresh.calendar_ids)
        return True

    def _enqueue_syncs(self, account: Account, cals: Sequence[str]) -> None:
        assert account.id is not None
        now = self._now()
        with write(self.store.engine) as conn:
            for cal in cals:
                jobs.enqueue(
                    conn,
                    "sync",
                    {"account": account.id, "calendar": cal},
                    coalesce_key=_sync_key(account.id, cal),
                    now=now,
                )

    async def maintain(self) -> dict[str, int]:
        """The periodic job: renew expiring channels, repair unhealthy ones, retry pending."""
        now = self._now()
        counts = {"renewed": 0, "failed": 0}
        records = await self._db(self.store.channels.list_channels)
        for rec in records:
            ch: Channel = rec.channel
            if rec.health == "polling" or ch.id.startswith(POLL_PREFIX):
                continue
            due = ch.expires_at is not None and ch.expires_at - now <= self.renew_margin
            if due or rec.health in ("pending", "failing", "closed", "renewing"):
                ok = await self.renew_channel(
                    ch.provider, ch.id, recreate=rec.health in ("failing", "closed")
                )
                counts["renewed" if ok else "failed"] += 1
        return counts

    async def after_reconcile(self, account_id: str, calendar_id: str, changed: int) -> None:
        """A reconciliation found ``changed`` events: a silent channel is unhealthy."""
        if changed <= 0:
            return
        now = self._now()
        for rec in await self._db(self.store.channels.list_channels, account_id=account_id):
            ch: Channel = rec.channel
            if rec.health != "active" or calendar_id not in ch.calendar_ids:
                continue
            last = rec.last_notification_at or rec.created_at
            if now - last < SILENCE:
                continue
            log.warning("channel %s silent while reconciliation found changes", ch.id)
            await self._db(
                self.store.channels.set_channel_health,
                ch.provider,
                ch.id,
                "failing",
                reason="silent while reconciliation found changes",
                failed=True,
            )
            account = await self._db(self.store.accounts.get_account, account_id)
            if account is not None:
                await self._db(self.start_polling, account, ch.calendar_ids, None, "channel silent")

    # ------------------------------------------------------------ polling

    def start_polling(
        self,
        account: Account,
        cals: Sequence[str],
        interval: float | None = None,
        reason: str = "",
    ) -> None:
        """Poll ``cals`` every ``interval`` seconds (default the bridge's ``poll_interval``)."""
        assert account.id is not None
        every = float(interval or self.runtime.config.poll_interval)
        now = self._now()
        pseudo_id = POLL_PREFIX + account.id
        with write(self.store.engine) as conn:
            current = self.store.channels.get_channel(account.provider, pseudo_id, conn=conn)
            polled = set(current.channel.calendar_ids) if current is not None else set()
            polled.update(cals)
            pseudo = Channel(
                provider=account.provider,
                id=pseudo_id,
                callback_url="",
                account_id=account.id,
                calendar_ids=tuple(sorted(polled)),
            )
            self.store.channels.save_channel(
                pseudo, health="polling", health_reason=reason, conn=conn
            )
            for cal in cals:
                jobs.ensure_schedule(
                    conn,
                    _key("poll", account.id, cal),
                    "poll",
                    {"account": account.id, "calendar": cal},
                    every=every,
                    first_run_at=now + every * self.rng.random(),
                    now=now,
                )

    def stop_polling(self, account: Account) -> None:
        """Stop polling the account (its channels push again)."""
        assert account.id is not None
        self._drop_schedules(account.id, "poll")
        self.store.channels.delete_channel(account.provider, POLL_PREFIX + account.id)

    def _maybe_stop_polling(self, account: Account) -> None:
        assert account.id is not None
        records = self.store.channels.list_channels(account_id=account.id)
        if all(r.health == "active" for r in records if not r.channel.id.startswith(POLL_PREFIX)):
            self.stop_polling(account)


def _sync_key(account_id: str, calendar_id: str) -> str:
    return f"sync:{account_id}:{calendar_id}"
