"""The end-to-end migration story `make demo` tells, on the local sandboxes.

Everything is real except the providers: the sandboxes (Google, Outlook, Cronofy views of
one world) and the webhook receiver run on loopback HTTP in their own threads, the state
is an embedded SQLite file, the connect flows are real OAuth redirects, notifications are
real signed POSTs, and the sync jobs run through the durable queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import random
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import attrs
import httpx

from .._config import BridgeConfig, RoutingConfig
from ..bridge import CalBridge
from ..models import EventDraft, EventTime, TimeRange
from ..provider import ProviderSettings
from ..router import Phase
from ._ledger import AppLedger, compare, world_truth

__all__ = ["DemoOptions", "DemoSummary", "run_demo"]

T = TypeVar("T")

CLIENTS = {
    "google": ("demo-google.apps.googleusercontent.com", "GOCSPX-demo-secret"),
    "outlook": ("00000000-demo-graph-client", "demo-graph-secret"),
    "cronofy": ("demo-cronofy-client", "demo-cronofy-secret"),
}


@attrs.frozen(kw_only=True)
class DemoOptions:
    """How big and how long the demo is."""

    google_users: int = 12
    outlook_users: int = 4
    #: users who never re-authorise through Cronofy (they stay on legacy, listed)
    not_reauthorised: int = 2
    ticks: int = 4
    events_per_user: int = 6
    seed: int = 7
    workdir: Path | None = None
    quiet: bool = False
    #: run sandboxes and receiver in-process (ASGI transports) instead of over loopback
    inprocess: bool = False
    #: also roll one user back from shadow, from dual and from cutover, and check that
    #: each works fully on legacy afterwards
    rollback_every_phase: bool = False
    #: the store (default: an embedded SQLite file in the work directory)
    database_url: str | None = None

    @classmethod
    def fast(cls) -> DemoOptions:
        """A small run for the test suite."""
        return cls(google_users=3, outlook_users=2, not_reauthorised=1, ticks=2, events_per_user=3)


@attrs.frozen(kw_only=True)
class DemoSummary:
    """What the demo ends with (also printed)."""

    users_by_provider: dict[str, int]
    users_by_phase: dict[str, int]
    waiting_reauth: list[str]
    rolled_back: str | None
    rollbacks_working_on_legacy: dict[str, str]
    events_cached: int
    notifications: int
    batches_delivered: int
    parity_clean: int
    parity_checked: int
    lost: list[str]
    duplicated: list[str]
    #: native changes and app writes made during the story
    changes_made: int = 0
    #: upserts and deletions the app received in all
    items_delivered: int = 0
    #: items delivered while Cronofy connected and first synced (no change was made then)
    delivered_on_connect: int = 0
    #: users whose cutover a guard refused (none is ever forced)
    cutover_refused: list[str] = attrs.field(factory=list)
    #: app-written events present more than once in the world
    duplicated_in_world: list[str] = attrs.field(factory=list)
    #: updates and deletions by key after cutover, checked against the original native event
    post_cutover_writes: int = 0
    post_cutover_failures: list[str] = attrs.field(factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return attrs.asdict(self)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing delivered twice, nothing delivered when Cronofy connected,
        no cutover refused, no duplicate in the world, every write after cutover reached
        the original event, every rolled-back user works on legacy."""
        return (
            not self.lost
            and not self.duplicated
            and not self.delivered_on_connect
            and not self.cutover_refused
            and not self.duplicated_in_world
            and not self.post_cutover_failures
            and all(v == "ok" for v in self.rollbacks_working_on_legacy.values())
        )


class _Narrator:
    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(quiet=quiet)

    def act(self, title: str) -> None:
        self.console.rule(f"[bold cyan]{title}")

    def say(self, text: str) -> None:
        self.console.print(text)


async def run_demo(options: DemoOptions | None = None) -> DemoSummary:
    """Run the whole story; returns the summary (raises nothing on a lost change: reports)."""
    options = options or DemoOptions()
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return await _Demo(options, workdir).run()
    raise AssertionError("unreachable")  # pragma: no cover


class _Demo:
    def __init__(self, options: DemoOptions, workdir: Path) -> None:
        self.o = options
        self.workdir = workdir
        self.rng = random.Random(options.seed)  # noqa: S311 - a reproducible story, not crypto
        self.say = _Narrator(options.quiet)
        self.app = AppLedger()
        self.keys = 0
        self.changes_made = 0
        self.lost: list[str] = []
        #: app key -> (user, native event id) of events the app wrote before migrating
        self.premigration: dict[str, tuple[str, str]] = {}

    # -- plumbing ----------------------------------------------------------------------

    async def world(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` on the sandbox server's loop (the world lives there)."""
        if self.o.inprocess:
            return await fn()
        return await asyncio.to_thread(self.sandbox.call, fn)

    async def tick(self, seconds: float = 301.0) -> None:
        """Advance sandbox time (Cronofy polls natively, pushes go out), then run jobs."""
        from ..sync import drain

        await self.world(lambda: self.w.clock.advance(seconds))
        if not self.o.inprocess:
            await asyncio.sleep(0.05)  # let in-flight webhook POSTs land
        await drain(self.worker)

    async def connect(self, user: str, provider: str, email: str) -> None:
        url = await self.bridge.connect_url(user, provider, login_hint=email)
        answer = await self.http.get(url)
        if answer.status_code != 302:
            raise RuntimeError(f"{provider} consent failed: {answer.status_code}")
        params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
        await self.bridge.complete_connect(provider, params)

    def draft(self, summary: str, hours: float) -> EventDraft:
        now = self.w.clock.now()
        start = (now + dt.timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)
        return EventDraft(
            summary=summary,
            start=EventTime.zoned(start, "UTC"),
            end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
        )

    @contextlib.contextmanager
    def servers(self) -> Iterator[None]:
        from ..sandbox import Clock, World, build_app, serve_in_thread
        from ..testing import fresh_plugin_host

        self.host = fresh_plugin_host()
        # sandbox time starts at the real time, so every plugin's own clock agrees with it
        self.w = World(clock=Clock(start=dt.datetime.now(dt.UTC).replace(microsecond=0)))
        for client_id, secret in CLIENTS.values():
            self.w.add_application(client_id, secret)
        # the receiver is mounted once the bridge exists; a tiny indirection serves it
        self.receiver_app: Any = None

        async def receiver(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":  # nothing to start: acknowledge
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                if self.receiver_app is not None:  # stop its background tasks on its loop
                    await self.receiver_app.state.receiver.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
            await self.receiver_app(scope, receive, send)

        sandboxes = build_app(self.w, dict(self.host.sandbox_factories()))
        if self.o.inprocess:
            self.w.delivery.transport = httpx.ASGITransport(app=receiver)
            self.transport: httpx.AsyncBaseTransport | None = httpx.ASGITransport(app=sandboxes)
            self.sandbox_base, self.hooks_base = "http://sandbox.local", "http://hooks.local"
            yield
            return
        self.transport = None
        with serve_in_thread(sandboxes) as sandbox, serve_in_thread(receiver) as hooks:
            self.sandbox = sandbox
            self.sandbox_base, self.hooks_base = sandbox.base_url, hooks.base_url
            yield

    def config(self) -> BridgeConfig:
        from ..store.vault import generate_key

        base = self.sandbox_base
        settings = {
            "google": ProviderSettings(
                client_id=CLIENTS["google"][0],
                client_secret=CLIENTS["google"][1],
                base_urls={
                    "api": f"{base}/google",
                    "accounts": f"{base}/google",
                    "oauth2": f"{base}/google",
                },
            ),
            "outlook": ProviderSettings(
                client_id=CLIENTS["outlook"][0],
                client_secret=CLIENTS["outlook"][1],
                base_urls={"graph": f"{base}/graph", "login": f"{base}/graph"},
            ),
            "cronofy": ProviderSettings(
                client_id=CLIENTS["cronofy"][0],
                client_secret=CLIENTS["cronofy"][1],
                base_urls={"api": f"{base}/cronofy", "app": f"{base}/cronofy"},
                options={"clock": self.w.clock.now},
            ),
        }
        return BridgeConfig(
            database_url=self.o.database_url or f"sqlite:///{self.workdir / 'calbridge.db'}",
            keys=f"demo:{generate_key()}",
            public_url=self.hooks_base,
            redirect_base="http://127.0.0.1:8000/oauth",
            # routing follows the migration phase; no blanket "prefer Cronofy" rule here
            routing=RoutingConfig(prefer_when_authorized=False),
            providers=settings,
        )

    # -- the story ---------------------------------------------------------------------

    async def run(self) -> DemoSummary:
        with self.servers():
            self.bridge = CalBridge(
                self.config(),
                host=self.host,
                transport=self.transport,
                clock=lambda: self.w.clock.now().timestamp(),
            )
            self.receiver_app = self.bridge.webhook_app()
            self.bridge.on_changes(self.app)
            self.worker = self.bridge.worker(concurrency=1, poll_interval=0.01)
            async with httpx.AsyncClient(transport=self.transport) as http, self.bridge:
                self.http = http
                try:
                    return await self.story()
                finally:
                    if self.o.inprocess:
                        await self.receiver_app.state.receiver.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    async def story(self) -> DemoSummary:
        from ..migration import Migrator

        o, say = self.o, self.say
        users = [(f"g{i:02d}", f"g{i:02d}@example.com", "google") for i in range(o.google_users)]
        users += [(f"m{i:02d}", f"m{i:02d}@example.org", "outlook") for i in range(o.outlook_users)]
        self.users = users

        say.act("1. A world of calendars")
        for _user, email, legacy in users:
            native = "google" if legacy == "google" else "microsoft"
            await self.world(functools.partial(self._populate, email, native))
        say.say(
            f"{o.google_users} Google-native and {o.outlook_users} Microsoft-native users, "
            f"{o.events_per_user} events each, an all-day event, a weekly series with one "
            "moved and one cancelled occurrence, and an all-day series, in the sandbox world."
        )

        say.act("2. The legacy integration: users connect Google and Outlook directly")
        for user, email, legacy in users:
            await self.connect(user, legacy, email)
        await self.tick(1)
        for user, email, _legacy in users:
            await self.premigration_bookings(user, email)
        await self.tick(1)
        await self.checkpoint("connected to legacy")
        say.say(
            f"connected {len(users)} users through real OAuth redirects; push channels "
            "open to the webhook receiver; first syncs done; each user's app wrote two "
            "bookings through the legacy provider."
        )

        say.act("3. Life goes on: a background writer changes calendars")
        await self.writes()
        await self.tick()
        await self.checkpoint("legacy writes")

        say.act("4. Users re-authorise through Cronofy")
        waiting = {u for u, _e, legacy in users if legacy == "google"}
        waiting = set(sorted(waiting)[: o.not_reauthorised])
        before = self.app.items
        for user, email, _legacy in users:
            if user not in waiting:
                await self.connect(user, "cronofy", email)
        await self.tick()
        await self.tick()
        self.on_connect = self.app.items - before
        say.say(f"changes delivered while Cronofy connected and synced: {self.on_connect}")
        migrator = Migrator(
            self.bridge.runtime, clean_period=600, grace=900, clock=self.bridge.runtime.clock
        )
        plan = migrator.plan([u for u, _e, _l in users])
        self.table(
            "migration plan",
            ["user", "phase", "readiness", "detail"],
            [(r.app_user_id, r.phase, r.readiness, r.detail) for r in plan],
        )
        cohort = [r.app_user_id for r in plan if r.readiness == "ready"]

        say.act(f"5. Shadow: {len(cohort)} users, reads replayed against Cronofy")
        await migrator.bulk(cohort, Phase.SHADOW)
        for _ in range(max(1, o.ticks // 2)):
            await self.writes()
            await self.tick()
        await self.tick()  # let Cronofy catch up with the last writes
        await self.checkpoint("shadow")
        clean = 0
        for user in cohort:
            report = await migrator.check_parity(user)
            clean += report.clean
        say.say(f"parity: {clean}/{len(cohort)} users clean")
        rollbacks: dict[str, str] = {}
        if o.rollback_every_phase and len(cohort) > 3:
            rollbacks[cohort.pop()] = "shadow"
            await migrator.rollback(next(iter(rollbacks)))

        say.act("6. Dual: writes through legacy, verified visible through Cronofy")
        await migrator.bulk(cohort, Phase.DUAL)
        if o.rollback_every_phase and len(cohort) > 3:
            user = cohort.pop()
            rollbacks[user] = "dual"
            await migrator.rollback(user)
        for _ in range(max(1, o.ticks // 2)):
            await self.writes()
            await self.tick()
        await self.tick(700)  # the clean period elapses
        await self.checkpoint("dual")
        parity_checked = clean = 0
        for user in cohort:
            report = await migrator.check_parity(user)
            parity_checked += 1
            clean += report.clean
            if not report.clean:
                say.say(f"  [yellow]{user} parity[/]: {report.as_dict()}")

        say.act("7. Cutover: Cronofy serves the cohort; legacy kept warm")
        result = await migrator.bulk(cohort, Phase.CUTOVER)
        self.refused = [user for user, _reason in result.refused]
        for user, reason in result.refused:
            say.say(f"  [yellow]{user} stays in dual[/]: {reason}")
        await self.after_cutover_writes(list(result.moved))
        for _ in range(o.ticks):
            await self.writes()
            await self.tick()
        await self.checkpoint("cutover")

        rolled_back = result.moved[0] if result.moved else None
        if rolled_back is not None:
            say.act(f"8. Rollback: {rolled_back} goes back to legacy")
            await migrator.rollback(rolled_back)
            rollbacks[rolled_back] = "cutover"
            await self.writes()
            await self.tick()
        self.working = {u: await self.works_on_legacy(u, phase) for u, phase in rollbacks.items()}
        for user, verdict in self.working.items():
            say.say(f"  {user} (rolled back from {rollbacks[user]}): {verdict}")
        say.act("9. Retire the legacy integration for the rest of the cohort")
        retire = [u for u in result.moved if u != rolled_back]
        await migrator.bulk(retire, Phase.RETIRED)
        for _ in range(max(1, o.ticks // 2)):
            await self.writes()
            await self.tick()
        await self.tick()
        await self.checkpoint("retired")
        return await self.summary(migrator, waiting, rolled_back, clean, parity_checked)

    async def checkpoint(self, when: str) -> None:
        """Compare what the app holds with the world; record what it gets wrong."""
        now = self.w.clock.now()
        for user, email, _legacy in self.users:
            natives = await self.world(functools.partial(self._natives, email))
            for line in compare(user, world_truth(natives, now), self.app.held(user)):
                entry = f"{line} (after {when})"
                if entry not in self.lost:
                    self.lost.append(entry)

    async def premigration_bookings(self, user: str, email: str) -> None:
        """The app writes two bookings through the legacy provider; remember their native
        events, which later updates and deletions through Cronofy must reach."""
        for n in (1, 2):
            key = f"{user}-premigration-{n}"
            await self.bridge.create_event(user, "primary", self.draft(key, 60 + n), key=key)
            self.changes_made += 1
            natives = await self.world(functools.partial(self._natives, email))
            native = next(e for e in natives if e.summary == key)
            self.premigration[key] = (user, native.id)

    async def after_cutover_writes(self, moved: list[str]) -> None:
        """Each user moved to Cronofy updates one pre-migration booking and deletes the
        other, by key; both must reach the original native events."""
        self.post_writes = 0
        self.post_failures: list[str] = []
        emails = {u: e for u, e, _l in self.users}
        for user in moved:
            cal = await self.world(functools.partial(self._primary, emails[user]))
            update, delete = f"{user}-premigration-1", f"{user}-premigration-2"
            await self.bridge.update_event(
                user, update, self.draft(f"{update} (moved by the app)", 61)
            )
            await self.bridge.delete_event(user, delete)
            self.changes_made += 2
            self.post_writes += 2
            await self.tick(1)
            for key, gone in ((update, False), (delete, True)):
                native_id = self.premigration[key][1]
                natives = await self.world(functools.partial(self._natives, emails[user]))
                same = [e for e in natives if e.summary and e.summary.startswith(key)]
                tomb = await self.world(functools.partial(self._native, cal, native_id))
                if gone and (same or not tomb.deleted):
                    self.post_failures.append(f"{user}: deleting {key} missed {native_id}")
                if not gone and [e.id for e in same] != [native_id]:
                    self.post_failures.append(
                        f"{user}: updating {key} reached {[e.id for e in same]}, not {native_id}"
                    )

    async def works_on_legacy(self, user: str, phase: str) -> str:
        """Route, read and write through legacy after a rollback; ``"ok"`` or what failed."""
        legacy = next(lg for u, _e, lg in self.users if u == user)
        email = next(e for u, e, _lg in self.users if u == user)
        decision = await self.bridge.aroute(user)
        if decision.provider != legacy:
            return f"routed to {decision.provider}, not {legacy}"
        key = f"{user}-after-rollback-from-{phase}"
        event = await self.bridge.create_event(user, "primary", self.draft(key, 50), key=key)
        if event.provider != legacy:
            return f"written through {event.provider}"
        natives = await self.world(functools.partial(self._natives, email))
        self.changes_made += 1
        if key not in {e.summary for e in natives}:
            return "the write did not reach the native calendar"
        now = self.w.clock.now()
        window = TimeRange(start=now, end=now + dt.timedelta(days=5))
        read = await self.bridge.list_events(user, "primary", window, live=True)
        if key not in {e.summary for e in read}:
            return "the live read through legacy misses the write"
        return "ok"

    async def _populate(self, email: str, native: str) -> None:
        self.w.add_user(email, native=native)  # type: ignore[arg-type]
        cal = self.w.primary_calendar(email).id
        name = email.split("@", maxsplit=1)[0]
        now = self.w.clock.now().replace(minute=0, second=0, microsecond=0)
        for n in range(self.o.events_per_user):
            start = now + dt.timedelta(days=1 + n, hours=self.rng.randrange(8, 17) - now.hour)
            self.w.insert_event(
                cal,
                start=EventTime.zoned(start, "UTC"),
                end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
                summary=f"{name} meeting {n}",
            )
        today = now.date()
        self.w.insert_event(
            cal,
            start=EventTime.all_day(today + dt.timedelta(days=4)),
            end=EventTime.all_day(today + dt.timedelta(days=5)),
            summary=f"{name} offsite",
        )
        self.w.insert_event(
            cal,
            start=EventTime.all_day(today + dt.timedelta(days=1)),
            end=EventTime.all_day(today + dt.timedelta(days=2)),
            summary=f"{name} on call",
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=4",),
        )
        first = now + dt.timedelta(days=2, hours=10 - now.hour)
        series = self.w.insert_event(
            cal,
            start=EventTime.zoned(first, "UTC"),
            end=EventTime.zoned(first + dt.timedelta(minutes=30), "UTC"),
            summary=f"{name} weekly 1:1",
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=6",),
        )
        moved = first + dt.timedelta(weeks=1)
        self.w.change_occurrence(
            cal,
            series.id,
            EventTime.zoned(moved, "UTC"),
            start=EventTime.zoned(moved + dt.timedelta(hours=3), "UTC"),
            end=EventTime.zoned(moved + dt.timedelta(hours=3, minutes=30), "UTC"),
        )
        self.w.change_occurrence(
            cal, series.id, EventTime.zoned(first + dt.timedelta(weeks=2), "UTC"), cancel=True
        )

    async def writes(self) -> None:
        """Native changes behind the app's back, and app writes through the bridge."""
        k = max(3, min(10, len(self.users) // 3))
        for user, email, _legacy in self.rng.sample(self.users, k=min(k, len(self.users))):
            action = self.rng.choice(
                ["insert", "update", "delete", "move", "cancel", "series", "app", "app"]
            )
            self.changes_made += 1
            if action == "app":
                self.keys += 1
                key = f"{user}-booking-{self.keys}"
                await self.bridge.create_event(
                    user, "primary", self.draft(f"booking {self.keys}", 30 + self.keys), key=key
                )
                continue
            await self.world(functools.partial(self._native_change, email, action))

    async def _native_change(self, email: str, action: str) -> None:
        cal = self.w.primary_calendar(email).id
        events = self.w.events(cal)
        singles = [
            e
            for e in events
            if not e.recurrence
            and e.recurring_event_id is None
            and not (e.summary or "").startswith(("booking", email.split("@", maxsplit=1)[0] + "-"))
            and not e.start.is_all_day
        ]
        masters = [e for e in events if e.recurrence and not e.start.is_all_day]
        if action in ("move", "cancel", "series") and masters:
            master = self.rng.choice(masters)
            if action == "series":
                self.w.update_event(cal, master.id, summary=f"{master.summary} (renamed)")
                return
            assert master.start.datetime is not None
            week = self.rng.randrange(0, 6)
            original = master.start.datetime + dt.timedelta(weeks=week)
            changes: dict[str, Any] = {"cancel": True}
            if action == "move":
                shift = dt.timedelta(hours=self.rng.randrange(1, 5))
                changes = {
                    "start": EventTime.zoned(original + shift, "UTC"),
                    "end": EventTime.zoned(original + shift + dt.timedelta(minutes=30), "UTC"),
                }
            with contextlib.suppress(ValueError):
                self.w.change_occurrence(
                    cal, master.id, EventTime.zoned(original, "UTC"), **changes
                )
            return
        if action in ("insert", "move", "cancel", "series") or not singles:
            start = self.w.clock.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(
                days=self.rng.randrange(1, 20), hours=3
            )
            self.w.insert_event(
                cal,
                start=EventTime.zoned(start, "UTC"),
                end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
                summary=f"native {self.rng.randrange(10**6)}",
            )
        elif action == "update":
            victim = self.rng.choice(singles)
            self.w.update_event(cal, victim.id, summary=f"{victim.summary} (edited)")
        else:
            self.w.delete_event(cal, self.rng.choice(singles).id)

    def table(self, title: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        from rich.table import Table

        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*(str(x) for x in r))
        self.say.console.print(table)

    def _counts(self) -> tuple[int, int]:
        """Cached events and received notifications (a store read)."""
        from ..store import read

        store = self.bridge.store
        with read(store.engine) as conn:  # one snapshot for both counts
            return store.events.count_cached(conn=conn), store.channels.count_inbox(conn=conn)

    async def summary(
        self, migrator: Any, waiting: set[str], rolled_back: str | None, clean: int, checked: int
    ) -> DemoSummary:
        from ..store import offload

        by_provider: dict[str, int] = {}
        by_phase: dict[str, int] = {}
        in_world: list[str] = []
        for user, email, _legacy in self.users:
            provider = (await self.bridge.aroute(user)).provider
            by_provider[provider] = by_provider.get(provider, 0) + 1
            phase = str((await offload(migrator.status, user)).phase)
            by_phase[phase] = by_phase.get(phase, 0) + 1
            natives = await self.world(functools.partial(self._natives, email))
            seen: dict[str, int] = {}
            for e in natives:
                if e.recurring_event_id is None:
                    seen[e.summary or ""] = seen.get(e.summary or "", 0) + 1
            in_world += [f"{user}: {s!r} x{n}" for s, n in seen.items() if n > 1]
        duplicated = [f"{u}: {what} of {ident}" for u, ident, what in self.app.twice]
        events_cached, notifications = await offload(self._counts)
        result = DemoSummary(
            users_by_provider=by_provider,
            users_by_phase=by_phase,
            waiting_reauth=sorted(waiting),
            rolled_back=rolled_back,
            rollbacks_working_on_legacy=dict(getattr(self, "working", {})),
            events_cached=events_cached,
            notifications=notifications,
            batches_delivered=self.app.batches,
            parity_clean=clean,
            parity_checked=checked,
            lost=list(self.lost),
            duplicated=duplicated,
            changes_made=self.changes_made,
            items_delivered=self.app.items,
            delivered_on_connect=getattr(self, "on_connect", 0),
            cutover_refused=list(getattr(self, "refused", [])),
            duplicated_in_world=in_world,
            post_cutover_writes=getattr(self, "post_writes", 0),
            post_cutover_failures=list(getattr(self, "post_failures", [])),
        )
        self.say.act("Summary")
        self.table("users", ["provider", "users"], sorted(by_provider.items()))
        self.table("phases", ["phase", "users"], sorted(by_phase.items()))
        self.table(
            "pipeline",
            ["measure", "value"],
            [
                ("changes made (native and by the app)", self.changes_made),
                ("events in the cache", events_cached),
                ("notifications received", notifications),
                ("change batches delivered to the app", self.app.batches),
                ("upserts and deletions delivered", self.app.items),
                ("delivered when Cronofy connected", result.delivered_on_connect),
                ("parity clean before cutover", f"{clean}/{checked}"),
                ("cutovers refused (none forced)", len(result.cutover_refused)),
                ("still on legacy, not re-authorised", ", ".join(sorted(waiting)) or "-"),
                ("rolled back", rolled_back or "-"),
                (
                    "writes by key after cutover reaching the original event",
                    f"{result.post_cutover_writes - len(result.post_cutover_failures)}"
                    f"/{result.post_cutover_writes}",
                ),
                ("changes lost", len(result.lost)),
                ("changes delivered twice", len(duplicated)),
                ("duplicate events in the world", len(in_world)),
            ],
        )
        verdict = "[bold green]nothing lost[/]" if result.ok else "[bold red]LOST CHANGES[/]"
        self.say.say(verdict)
        for line in result.lost + duplicated + in_world + result.post_cutover_failures:
            self.say.say(f"  {line}")
        return result

    async def _natives(self, email: str) -> list[Any]:
        return self.w.events(self.w.primary_calendar(email).id)

    async def _native(self, calendar_id: str, event_id: str) -> Any:
        return self.w.event(calendar_id, event_id, include_deleted=True)

    async def _primary(self, email: str) -> str:
        return self.w.primary_calendar(email).id
