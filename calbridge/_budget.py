"""The application-wide rate budget: one budget per provider and application (client id),
shared by every process on the same store (SQLite file or PostgreSQL database).

A provider limits the *application*, not a process: Cronofy answers 429 past 50 requests a
second or 500 a minute per client id, however many workers send them. Each process
therefore takes its grants from rows of the ``rate_budget`` table, one row per window
(``"1s"``, ``"60s"`` ...), in one short write transaction per grant (``BEGIN IMMEDIATE``
on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), run off the event loop.

Windows are sliding and counted in slots: a window of ``period`` seconds (lengthened by
``margin``, so requests reaching the provider with uneven delays stay inside its window)
is cut into ``slots`` slots, and a grant at slot ``k`` is allowed only while the grants of
slots ``k - slots`` .. ``k`` stay within the limit. Those slots cover every sliding window
that ends at the grant, so no window of ``period`` seconds ever holds more than ``limit``
grants (the cost: up to one slot of capacity, 2% with 50 slots).

Priorities: a call made inside :func:`background_calls` (sync polling, parity, ...) is
granted only while ``reserve`` of every window is left, which stays for user-facing calls
-- while there are any: the reserve holds in a window in which a user-facing call was
granted or refused (each slot records the user-facing calls it saw). A window with no
user-facing call in it lends its reserve to background work, so a fan-out with no users
about uses the whole quota, and the first user-facing call to wait takes it back for the
rest of the window.

Fairness across accounts: a call carries the account it is made for (:func:`call_account`,
set by :meth:`calbridge.Session.access_token` before every provider call, or scoped with
:func:`calls_for_account`). In a process, calls waiting for a grant are served round-robin
by account rather than first come (one account's hundred waiting calls do not go before
another's one). Across processes, while another account is waiting for a background
grant, an account that already has ``account_share`` of a window's background grants
(and more than the waiting one) leaves the room to it: one account's backfill cannot
starve the others' polling, and alone it still gets the whole budget. User-facing calls
are exempt (they have the reserve).

A 429 pauses the budget for every process: :meth:`RateBudget.pause` records a
``paused_until_ms`` all processes honour (the ``Retry-After``, else 1 s doubling on each
429 that follows a pause, up to 60 s).

Only calls the provider counts go through the budget (:func:`counted`): OAuth token
endpoint calls (code exchange, refresh, revocation) are not API calls and are not
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs
import httpx

from .errors import RateLimited
from .store import BudgetRows

if TYPE_CHECKING:
    from .store import Engine

__all__ = [
    "DEFAULT_QUOTAS",
    "Priority",
    "RateBudget",
    "RateQuota",
    "RateWindow",
    "background_calls",
    "call_account",
    "call_priority",
    "calls_for_account",
    "counted",
    "install_rate_budget",
    "note_account",
    "rate_budget",
]

log = logging.getLogger("calbridge.budget")

Priority = Literal["user", "background"]

_PRIORITY: contextvars.ContextVar[Priority] = contextvars.ContextVar(
    "calbridge_call_priority", default="user"
)


def call_priority() -> Priority:
    """The priority of the calls made here: ``"user"`` unless inside :func:`background_calls`."""
    return _PRIORITY.get()


@contextlib.contextmanager
def background_calls() -> Iterator[None]:
    """Provider calls made inside (this task and the tasks it starts) are background work:
    they use the shared budget only while its reserve for user-facing calls is left."""
    token = _PRIORITY.set("background")
    try:
        yield
    finally:
        _PRIORITY.reset(token)


_ACCOUNT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "calbridge_call_account", default=None
)
#: the account of calls made for no account in particular
_NO_ACCOUNT: Final = "-"


def call_account() -> str | None:
    """The account the calls made here are for (None: not known)."""
    return _ACCOUNT.get()


@contextlib.contextmanager
def calls_for_account(account_id: str | None) -> Iterator[None]:
    """Provider calls made inside (this task and the tasks it starts) are made for
    ``account_id``: the budget shares its grants fairly between accounts."""
    token = _ACCOUNT.set(account_id)
    try:
        yield
    finally:
        _ACCOUNT.reset(token)


def note_account(account_id: str | None) -> None:
    """The calls this task makes from now on are for ``account_id`` (set, not scoped:
    :meth:`calbridge.Session.access_token` calls it before each provider call, in the
    calling task's context, so the call that follows is counted for its account)."""
    if _ACCOUNT.get() != account_id:
        _ACCOUNT.set(account_id)


@attrs.frozen
class RateWindow:
    """At most ``limit`` calls in any ``period`` seconds, counted in ``slots`` slots."""

    name: str
    limit: int
    period: float
    slots: int = 50


@attrs.frozen(kw_only=True)
class RateQuota:
    """A provider's application-wide limits and how the budget spends them.

    ``reserve``: the share of every window only user-facing calls may use.
    ``account_share``: while another account waits for a background grant, an account
    holding this share of a window's background grants (and more than the waiting one)
    gets no more of that window until the waiting one is served. ``margin``:
    how much longer than the provider's the windows are (a share of the period, at least
    ``min_margin`` seconds: a grant may reach the provider a little late on a busy host,
    and a one-second window has no room for that otherwise). ``batch``: how many grants a
    process takes at once (kept locally until the end of the slot they were taken in; 1
    for low limits, more for limits no single row could keep up with). ``first_pause`` /
    ``max_pause``: the pause after a 429 without ``Retry-After``, doubled on each 429 that
    follows a pause.
    """

    windows: tuple[RateWindow, ...]
    reserve: float = 0.1
    account_share: float = attrs.field(
        default=0.25, validator=[attrs.validators.gt(0.0), attrs.validators.le(1.0)]
    )
    margin: float = 0.05
    min_margin: float = 0.25
    batch: int = 1
    first_pause: float = 1.0
    max_pause: float = 60.0


#: the documented per-application quotas (docs/store.md, "Rate budget", gives sources)
DEFAULT_QUOTAS: Final[Mapping[str, RateQuota]] = {
    # Cronofy FAQ "rate limits": 50 requests/s and 500 requests/min per application
    "cronofy": RateQuota(windows=(RateWindow("1s", 50, 1.0), RateWindow("60s", 500, 60.0))),
    # Google Calendar API quota page: 10,000 requests/min per project (sliding window)
    "google": RateQuota(windows=(RateWindow("60s", 10_000, 60.0),), batch=10),
    # Microsoft Graph throttling limits: 130,000 requests per 10 s per app (all tenants)
    "outlook": RateQuota(windows=(RateWindow("10s", 130_000, 10.0),), batch=100),
}

#: hosts that serve only OAuth (token endpoints): never counted
_OAUTH_HOSTS: Final = frozenset(
    {"oauth2.googleapis.com", "accounts.google.com", "login.microsoftonline.com"}
)


def counted(request: httpx.Request) -> bool:
    """Whether the provider counts ``request`` against the application's API rate limit.

    Not counted: OAuth token endpoint calls (``.../token`` for a code exchange or a
    refresh, Cronofy's ``/oauth/token/revoke``, Google's ``/revoke``) and anything sent to
    Google's or Microsoft's OAuth hosts. Every other call is (reads, writes, channels,
    Cronofy's ``/v1/profiles/{id}/revoke``, userinfo ...).
    """
    if request.url.host in _OAUTH_HOSTS:
        return False
    segments = [s for s in request.url.path.split("/") if s]
    if not segments:
        return True
    last = segments[-1]
    if last == "token" or segments[-2:] == ["token", "revoke"]:
        return False
    return not (last == "revoke" and "profiles" not in segments)


@attrs.frozen
class _Answer:
    granted: int
    wait: float  # seconds, when nothing was granted
    paused: bool
    local_end: float  # time.monotonic() after which the extra grants are void
    at: float = 0.0  # the store's time of the grant, epoch seconds


@attrs.define
class _Waiter:
    account: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Turns:
    """The calls of one budget and priority waiting in this process, served round-robin
    by account: only the first waiter (the head) asks the store; once served, its
    account goes to the back, and the next account's first waiter is the head."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Waiter]] = {}  # insertion order: the rotation

    def busy(self) -> bool:
        return bool(self._queues)

    def _head(self) -> _Waiter | None:
        for queue in self._queues.values():
            return queue[0]
        return None

    def join(self, account: str) -> _Waiter:
        """Queue a waiter; its ``future`` is done when it is the head."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(account, loop, loop.create_future())
        with self._lock:
            self._queues.setdefault(account, deque()).append(waiter)
            if self._head() is waiter:
                waiter.future.set_result(None)
        return waiter

    def leave(self, waiter: _Waiter, *, served: bool) -> None:
        """``waiter`` is done (served, or gave up): the next head, if it changed, is woken."""
        with self._lock:
            was_head = self._head() is waiter
            queue = self._queues.get(waiter.account)
            if queue is not None:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue:
                    del self._queues[waiter.account]
                elif was_head and served:  # the account had its turn: to the back
                    self._queues[waiter.account] = self._queues.pop(waiter.account)
            head = self._head() if was_head else None
        if head is not None:
            head.loop.call_soon_threadsafe(_wake, head.future)


class _Accounts:
    """A window's background grants per account and slot, and the accounts waiting (the
    ``accounts`` JSON of a ``rate_budget`` row)."""

    def __init__(self, grants: dict[str, dict[int, int]], waiting: dict[str, int]) -> None:
        self.grants = grants
        self.waiting = waiting

    @classmethod
    def load(cls, stored: Any, first_slot: int, since_ms: int) -> _Accounts:
        """The stored value, without slots before ``first_slot`` nor marks before
        ``since_ms``."""
        data = stored if isinstance(stored, Mapping) else {}
        grants: dict[str, dict[int, int]] = {}
        for account, slots in (data.get("grants") or {}).items():
            kept = {int(s): int(c) for s, c in slots if int(s) >= first_slot}
            if kept:
                grants[str(account)] = kept
        waiting = {
            str(a): int(ms) for a, ms in (data.get("waiting") or {}).items() if int(ms) >= since_ms
        }
        return cls(grants, waiting)

    def dump(self) -> dict[str, Any]:
        return {
            "grants": {
                a: sorted([s, c] for s, c in slots.items()) for a, slots in self.grants.items()
            },
            "waiting": dict(self.waiting),
        }

    def used(self, account: str) -> int:
        return sum(self.grants.get(account, {}).values())

    def poorer_waiting(self, account: str) -> int:
        """How many other accounts wait for a grant with fewer grants than ``account``."""
        mine = self.used(account)
        return sum(1 for a in self.waiting if a != account and self.used(a) < mine)

    def wait(self, account: str, now: int, width: int) -> bool:
        """Mark ``account`` waiting; False when its mark is recent (nothing to write)."""
        if self.waiting.get(account, 0) > now - width:
            return False
        self.waiting[account] = now
        return True

    def grant(
        self, account: str, slot: int, granted: int, *, now: int, hold: int, span: int
    ) -> None:
        """Count ``granted`` grants of ``account`` in ``slot``; it stays marked waiting for
        ``hold`` ms more (marks last ``span`` ms: the mark is dated back to expire then).

        A served account usually asks again at once, and its next request takes a moment
        to reach the store (a busy host, another process holding the write lock): without
        the hold, accounts over their share would take the room in that moment."""
        slots = self.grants.setdefault(account, {})
        slots[slot] = slots.get(slot, 0) + granted
        self.waiting[account] = now - span + hold


def _slots(stored: Any, first: int) -> tuple[dict[int, int], dict[int, int]]:
    """Grants per slot and user-facing calls seen per slot (granted or waiting), from
    ``first`` on. A stored slot is ``[slot, grants]`` or ``[slot, grants, user calls]``."""
    grants: dict[int, int] = {}
    users: dict[int, int] = {}
    for entry in stored or []:
        slot = int(entry[0])
        if slot < first:
            continue
        grants[slot] = int(entry[1])
        if len(entry) > 2 and int(entry[2]):
            users[slot] = int(entry[2])
    return grants, users


def _dump_slots(grants: dict[int, int], users: dict[int, int]) -> list[list[int]]:
    return [
        [s, grants.get(s, 0), users[s]] if users.get(s) else [s, grants.get(s, 0)]
        for s in sorted(set(grants) | set(users))
    ]


class RateBudget:
    """The shared budget of one provider and application on one store.

    ``await budget.acquire()`` waits until a call fits in every window (and no pause is
    on), then returns; :meth:`pause` slows every process after a 429. ``clock`` (epoch
    seconds) defaults to the database's clock on PostgreSQL (processes on several hosts
    agree on it) and to the system clock on SQLite (one host).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        provider: str,
        app: str,
        quota: RateQuota,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.provider = provider
        self.app = app or "-"
        self.quota = quota
        self._sleep = sleep
        self._rows = BudgetRows(engine, provider=provider, app=self.app, clock=clock)
        self._lock = threading.Lock()
        self._local = 0
        self._local_priority: Priority = "user"
        self._local_end = 0.0
        self._local_at = 0.0
        self._widths = {w.name: self._width_ms(w) for w in quota.windows}
        self._spans = {w.name: self._span(w) for w in quota.windows}
        self._turns: dict[Priority, _Turns] = {"user": _Turns(), "background": _Turns()}

    def __repr__(self) -> str:
        return f"RateBudget({self.provider!r}, app={self.app!r})"

    def _width_ms(self, window: RateWindow) -> int:
        extra = max(window.period * self.quota.margin, self.quota.min_margin)
        return max(1, math.ceil((window.period + extra) * 1000 / window.slots))

    @staticmethod
    def counts(request: httpx.Request) -> bool:
        """Whether ``request`` is counted (see :func:`counted`)."""
        return counted(request)

    # -- the store --------------------------------------------------------------------

    def _ensure_rows(self) -> None:
        self._rows.ensure(w.name for w in self.quota.windows)

    def _take(self, priority: Priority, want: int, account: str = _NO_ACCOUNT) -> _Answer:
        """One transaction: grant up to ``want`` calls now, or say how long to wait."""
        self._ensure_rows()
        fair = priority == "background"
        with self._rows.change() as tx:
            now = tx.now_ms
            started = time.monotonic()
            rows = tx.rows
            paused = max((r.paused_until_ms for r in rows.values()), default=0)
            if paused > now:
                return _Answer(0, (paused - now) / 1000, True, 0.0)
            granted, wait_ms, end_ms = want, 0, None
            counts: dict[str, tuple[int, dict[int, int], _Accounts | None, dict[int, int]]] = {}
            for window in self.quota.windows:
                width = self._widths[window.name]
                slot = now // width
                row = rows.get(window.name)
                kept, users = _slots(row.slots if row is not None else [], slot - window.slots)
                cap = window.limit
                if priority == "background" and users:
                    cap -= math.ceil(window.limit * self.quota.reserve)
                room = cap - sum(kept.values())
                accounts, left = None, room
                if fair:
                    stored = row.accounts if row is not None else None
                    accounts = _Accounts.load(stored, slot - window.slots, now - self._span(window))
                    share = math.ceil(cap * self.quota.account_share)
                    if accounts.used(account) >= share and accounts.poorer_waiting(account):
                        left = 0  # an account with fewer grants waits: its turn first
                if left > 0:
                    granted = min(granted, left)
                elif room > 0:  # the room left is theirs: look again next slot
                    granted, wait_ms = 0, max(wait_ms, width)
                else:
                    oldest = min((s for s, c in kept.items() if c), default=slot)
                    wait_ms = max(wait_ms, (oldest + window.slots + 1) * width - now)
                    granted = 0
                counts[window.name] = (slot, kept, accounts, users)
                slot_end = (slot + 1) * width
                end_ms = slot_end if end_ms is None else min(end_ms, slot_end)
            if granted <= 0:
                for name, (slot, kept, accounts, users) in counts.items():
                    changes: dict[str, Any] = {}
                    if accounts is not None and accounts.wait(account, now, self._widths[name]):
                        changes["accounts"] = accounts.dump()
                    if priority == "user" and not users.get(slot):
                        # a user-facing call is waiting: background work leaves the reserve
                        users[slot] = 1
                        changes["slots"] = _dump_slots(kept, users)
                    if changes:
                        tx.update(changes, window=name)
                return _Answer(0, max(wait_ms, 1) / 1000, False, 0.0)
            for name, (slot, kept, accounts, users) in counts.items():
                kept[slot] = kept.get(slot, 0) + granted
                if priority == "user":
                    users[slot] = users.get(slot, 0) + granted
                values: dict[str, Any] = {"slots": _dump_slots(kept, users), "updated_ms": now}
                if accounts is not None:
                    accounts.grant(
                        account,
                        slot,
                        granted,
                        now=now,
                        hold=self._widths[name],
                        span=self._spans[name],
                    )
                    values["accounts"] = accounts.dump()
                tx.update(values, window=name)
            assert end_ms is not None
            return _Answer(granted, 0.0, False, started + (end_ms - now) / 1000, now / 1000)

    def _span(self, window: RateWindow) -> int:
        """How long a waiting mark holds, in ms: twice the window's slots, longer than any
        wait the budget asks for (a mark is renewed each time its account is refused)."""
        return 2 * (window.slots + 1) * self._widths[window.name]

    def pause(self, seconds: float | None = None) -> float:
        """A 429: no process gets a grant for ``seconds`` (the ``Retry-After``), or, when the
        provider said nothing, for ``first_pause`` doubled after each 429 that follows a
        pause (up to ``max_pause``). Returns the pause recorded, in seconds."""
        self._ensure_rows()
        with self._lock:
            self._local = 0
        with self._rows.change() as tx:
            now, rows = tx.now_ms, tx.rows
            until = max((r.paused_until_ms for r in rows.values()), default=0)
            last = max((r.pause_ms for r in rows.values()), default=0)
            if seconds is not None:
                length = int(seconds * 1000)
            elif until > now:  # a 429 of a call sent before the pause began
                length = last or int(self.quota.first_pause * 1000)
            elif last and until > now - 10 * last:  # again soon after a pause: double it
                length = min(int(self.quota.max_pause * 1000), 2 * last)
            else:
                length = int(self.quota.first_pause * 1000)
            new_until = max(until, now + length)
            tx.update({"paused_until_ms": new_until, "pause_ms": length, "updated_ms": now})
        log.info(
            "%s answered 429: budget of %s paused %.3g s", self.provider, self.app, length / 1000
        )
        return length / 1000

    def state(self) -> dict[str, Any]:
        """The budget as stored: per window its grants in the current window, and the pause."""
        self._ensure_rows()
        now, rows = self._rows.read()
        out: dict[str, Any] = {"paused_for": 0.0, "windows": {}}
        for window in self.quota.windows:
            row = rows.get(window.name)
            slot = now // self._widths[window.name]
            used = sum(_slots(row.slots if row else [], slot - window.slots)[0].values())
            out["windows"][window.name] = {"limit": window.limit, "used": used}
            if row is not None:
                out["paused_for"] = max(out["paused_for"], (row.paused_until_ms - now) / 1000)
        return out

    # -- the async surface ------------------------------------------------------------

    def _take_local(self, priority: Priority) -> float | None:
        with self._lock:
            if self._local <= 0 or time.monotonic() >= self._local_end:
                self._local = 0
                return None
            if priority == "background" and self._local_priority != "background":
                return None
            self._local -= 1
            return self._local_at

    async def acquire(
        self, priority: Priority | None = None, *, max_wait: float | None = None
    ) -> float:
        """Wait until one call fits (every window, no pause), then return.

        Returns the store's time of the grant (epoch seconds; for a grant of a batch taken
        earlier, the batch's time).

        Raises:
            RateLimited: the budget is paused for longer than ``max_wait`` seconds (a job
                can be rescheduled rather than sleep).
        """
        prio = priority or call_priority()
        account = call_account() or _NO_ACCOUNT
        turns = self._turns[prio]
        answer: _Answer | None = None
        if not turns.busy():  # nobody waits here: try at once
            got = await self._try(prio, account)
            if isinstance(got, float):
                return got
            answer = self._check(got, max_wait)
        waiter = turns.join(account)
        if not waiter.future.done():
            answer = None  # others go first: what the store said may be old by then
        served = False
        try:
            while True:
                await waiter.future  # this call's turn among this process's waiters
                if answer is None:
                    got = await self._try(prio, account)
                    if isinstance(got, float):
                        served = True
                        return got
                    answer = self._check(got, max_wait)
                # a little jitter, so waiting processes do not all come back at once
                await self._sleep(answer.wait + random.uniform(0, 0.02))  # noqa: S311 - jitter
                answer = None
        finally:
            turns.leave(waiter, served=served)

    async def _try(self, priority: Priority, account: str) -> float | _Answer:
        """A grant (the store's time of it), or the store's answer saying how long to wait."""
        local = self._take_local(priority)
        if local is not None:
            return local
        from .store import offload

        answer = await offload(self._take, priority, max(1, self.quota.batch), account)
        if not answer.granted:
            return answer
        if answer.granted > 1:
            with self._lock:
                self._local = answer.granted - 1
                self._local_priority = priority
                self._local_end = answer.local_end
                self._local_at = answer.at
        return answer.at

    def _check(self, answer: _Answer, max_wait: float | None) -> _Answer:
        if answer.paused and max_wait is not None and answer.wait > max_wait:
            raise RateLimited(
                "the application's rate budget is paused after a 429",
                provider=self.provider,
                retry_after=answer.wait,
            )
        return answer

    async def apause(self, seconds: float | None = None) -> float:
        """:meth:`pause`, off the event loop."""
        from .store import offload

        return await offload(self.pause, seconds)

    async def __aenter__(self) -> RateBudget:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def install_rate_budget(client: httpx.AsyncClient, budget: RateBudget) -> None:
    """Make ``client`` take ``budget.provider``'s calls from ``budget`` (and pause it on a
    429): on the shared client, every request marked as a call to that provider
    (:class:`calbridge.ProviderCall`, :func:`calbridge.send`); on another client, the
    calls :func:`calbridge.send` makes."""
    budgets: dict[str, RateBudget] | None = getattr(client, "rate_budgets", None)
    if budgets is None:
        budgets = {}
        client.rate_budgets = budgets  # type: ignore[attr-defined]
    budgets[budget.provider] = budget


def rate_budget(
    client: httpx.AsyncClient | httpx.AsyncBaseTransport, provider: str
) -> RateBudget | None:
    """The budget installed on ``client`` (or on the shared client's transport) for
    ``provider``, if any."""
    budgets: dict[str, RateBudget] | None = getattr(client, "rate_budgets", None)
    return budgets.get(provider) if budgets else None
