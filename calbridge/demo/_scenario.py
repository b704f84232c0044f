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
from .._feed import event_identity
from ..bridge import CalBridge
from ..models import EventDraft, EventTime, TimeRange
from ..provider import ProviderSettings
from ..router import Phase

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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return attrs.asdict(self)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing duplicated, every rolled-back user works on legacy."""
        return (
            not self.lost
            and not self.duplicated
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


@attrs.define
class _AppView:
    """The application's own copy of its users' calendars, built only from change batches.

    Keyed by (user, iCalUID): a series is present while any of its events (master or
    occurrence, whichever the provider reports) is live.
    """

    live: dict[tuple[str, str], set[tuple[str, str]]] = attrs.field(factory=dict)
    summaries: dict[tuple[str, str], str] = attrs.field(factory=dict)
    ids: dict[tuple[str, str], tuple[str, str]] = attrs.field(factory=dict)
    batches: int = 0
    seen: dict[tuple[str, str, str, str], int] = attrs.field(factory=dict)

    async def __call__(self, batch: Any) -> None:
        self.batches += 1
        user = batch.app_user_id or "?"
        for event in batch.upserted:
            uid = event.ical_uid or event.id
            ref = (batch.account_id, event.id)
            self.ids[ref] = (user, uid)
            if str(event.status) == "cancelled":
                self.live.get((user, uid), set()).discard(ref)
                continue
            self.live.setdefault((user, uid), set()).add(ref)
            self.summaries[(user, uid)] = event.summary or ""
            key = (user, uid, event_identity(event), event.summary or "")
            self.seen[key] = self.seen.get(key, 0) + 1
        for event_id in batch.deleted:
            ref = (batch.account_id, event_id)
            found = self.ids.get(ref)
            if found is not None:
                self.live.get(found, set()).discard(ref)

    def told(self, user: str) -> dict[str, str]:
        """iCalUID -> summary of what the app believes is live for ``user``."""
        return {
            uid: self.summaries[(u, uid)]
            for (u, uid), refs in self.live.items()
            if u == user and refs
        }


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
        self.app = _AppView()
        self.keys = 0

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
            database_url=f"sqlite:///{self.workdir / 'calbridge.db'}",
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
            f"{o.events_per_user} events each (with a weekly series), in the sandbox world."
        )

        say.act("2. The legacy integration: users connect Google and Outlook directly")
        for user, email, legacy in users:
            await self.connect(user, legacy, email)
        await self.tick(1)
        say.say(
            f"connected {len(users)} users through real OAuth redirects; push channels "
            "open to the webhook receiver; first syncs done."
        )

        say.act("3. Life goes on: a background writer changes calendars")
        await self.writes()
        await self.tick()

        say.act("4. Users re-authorise through Cronofy")
        waiting = {u for u, _e, legacy in users if legacy == "google"}
        waiting = set(sorted(waiting)[: o.not_reauthorised])
        for user, email, _legacy in users:
            if user not in waiting:
                await self.connect(user, "cronofy", email)
        await self.tick()
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
        parity_checked = clean = 0
        for user in cohort:
            report = await migrator.check_parity(user)
            parity_checked += 1
            clean += report.clean

        say.act("7. Cutover: Cronofy serves the cohort; legacy kept warm")
        result = await migrator.bulk(cohort, Phase.CUTOVER)
        for user, reason in result.refused:
            say.say(f"  [yellow]{user} stays in dual[/]: {reason}")
        for _ in range(o.ticks):
            await self.writes()
            await self.tick()

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
        await self.writes()
        await self.tick()
        await self.tick()
        return await self.summary(migrator, waiting, rolled_back, clean, parity_checked)

    async def works_on_legacy(self, user: str, phase: str) -> str:
        """Route, read and write through legacy after a rollback; ``"ok"`` or what failed."""
        legacy = next(lg for u, _e, lg in self.users if u == user)
        email = next(e for u, e, _lg in self.users if u == user)
        decision = self.bridge.route(user)
        if decision.provider != legacy:
            return f"routed to {decision.provider}, not {legacy}"
        key = f"{user}-after-rollback-from-{phase}"
        event = await self.bridge.create_event(user, "primary", self.draft(key, 50), key=key)
        if event.provider != legacy:
            return f"written through {event.provider}"
        natives = await self.world(functools.partial(self._native_singles, email))
        if key not in natives.values():
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
        now = self.w.clock.now().replace(minute=0, second=0, microsecond=0)
        for n in range(self.o.events_per_user):
            start = now + dt.timedelta(days=1 + n, hours=self.rng.randrange(8, 17) - now.hour)
            self.w.insert_event(
                cal,
                start=EventTime.zoned(start, "UTC"),
                end=EventTime.zoned(start + dt.timedelta(hours=1), "UTC"),
                summary=f"{email.split('@', maxsplit=1)[0]} meeting {n}",
            )
        first = now + dt.timedelta(days=2, hours=10 - now.hour)
        self.w.insert_event(
            cal,
            start=EventTime.zoned(first, "UTC"),
            end=EventTime.zoned(first + dt.timedelta(minutes=30), "UTC"),
            summary=f"{email.split('@', maxsplit=1)[0]} weekly 1:1",
            recurrence=("RRULE:FREQ=WEEKLY;COUNT=6",),
        )

    async def writes(self) -> None:
        """Native changes behind the app's back, and app writes through the bridge."""
        for user, email, _legacy in self.rng.sample(self.users, k=min(3, len(self.users))):
            action = self.rng.choice(["insert", "update", "delete", "app"])
            if action == "app":
                self.keys += 1
                key = f"{user}-booking-{self.keys}"
                with contextlib.suppress(Exception):
                    await self.bridge.create_event(
                        user, "primary", self.draft(f"booking {self.keys}", 30 + self.keys), key=key
                    )
                continue
            await self.world(functools.partial(self._native_change, email, action))

    async def _native_change(self, email: str, action: str) -> None:
        cal = self.w.primary_calendar(email).id
        singles = [
            e for e in self.w.events(cal) if not e.recurrence and e.recurring_event_id is None
        ]
        if action == "insert" or not singles:
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

    async def summary(
        self, migrator: Any, waiting: set[str], rolled_back: str | None, clean: int, checked: int
    ) -> DemoSummary:
        import sqlalchemy as sa

        from ..store import read, schema

        rt = self.bridge.runtime
        by_provider: dict[str, int] = {}
        by_phase: dict[str, int] = {}
        lost: list[str] = []
        for user, email, _legacy in self.users:
            provider = self.bridge.route(user).provider
            by_provider[provider] = by_provider.get(provider, 0) + 1
            phase = str(migrator.status(user).phase)
            by_phase[phase] = by_phase.get(phase, 0) + 1
            natives = await self.world(functools.partial(self._native_singles, email))
            told = self.app.told(user)
            for uid, summary in natives.items():
                if told.get(uid) != summary:
                    lost.append(f"{user}: {summary!r} (app has {told.get(uid)!r})")
        duplicated = [
            f"{u}: {s!r} {occ} x{n}" for (u, _uid, occ, s), n in self.app.seen.items() if n > 1
        ]
        with read(rt.engine) as conn:
            cached = conn.execute(sa.select(sa.func.count()).select_from(schema.event_cache))
            events_cached = int(cached.scalar() or 0)
            inbox = conn.execute(sa.select(sa.func.count()).select_from(schema.webhook_inbox))
            notifications = int(inbox.scalar() or 0)
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
            lost=lost,
            duplicated=duplicated,
        )
        self.say.act("Summary")
        self.table("users", ["provider", "users"], sorted(by_provider.items()))
        self.table("phases", ["phase", "users"], sorted(by_phase.items()))
        self.table(
            "pipeline",
            ["measure", "value"],
            [
                ("events in the cache", events_cached),
                ("notifications received", notifications),
                ("change batches delivered to the app", self.app.batches),
                ("parity clean before cutover", f"{clean}/{checked}"),
                ("still on legacy, not re-authorised", ", ".join(sorted(waiting)) or "-"),
                ("rolled back", rolled_back or "-"),
                ("changes lost", len(lost)),
                ("changes delivered twice", len(duplicated)),
            ],
        )
        verdict = "[bold green]nothing lost[/]" if result.ok else "[bold red]LOST CHANGES[/]"
        self.say.say(verdict)
        for line in lost + duplicated:
            self.say.say(f"  {line}")
        return result

    async def _native_singles(self, email: str) -> dict[str, str]:
        cal = self.w.primary_calendar(email).id
        return {
            e.ical_uid: e.summary or ""
            for e in self.w.events(cal)
            if e.recurring_event_id is None and e.ical_uid
        }
