"""The console's Starlette app: pages, the two-step actions, login, ``/metrics``."""

from __future__ import annotations

import collections
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .._asgi import SecureApp
from ..errors import CalbridgeError
from ..router import Phase
from ..store import _console_queries as q
from ..store import offload, read
from . import _metrics
from ._auth import OPERATOR_RE, ConsoleSettings, SessionSigner, verify_password

__all__ = ["CONSOLE_CSP", "make_console_app"]

#: the console's pages load their own stylesheet and nothing else; no script at all
CONSOLE_CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_HERE = Path(__file__).parent
#: the migration actions: name -> (target phase, what the confirmation says)
TRANSITIONS: Final = {
    "start": (Phase.SHADOW, "legacy → shadow: reads replayed against the target and compared"),
    "dual": (Phase.DUAL, "shadow → dual: writes through legacy, verified through the target"),
    "cutover": (Phase.CUTOVER, "dual → cutover: the target serves; legacy kept warm"),
    "retire": (Phase.RETIRED, "cutover → retired: legacy channels stopped, tokens revoked"),
    "rollback": (Phase.LEGACY, "any phase → legacy"),
}
#: every action of the user page
ACTIONS: Final = (*TRANSITIONS, "pin", "unpin", "parity", "retry")
PHASES: Final = ("legacy", "shadow", "dual", "cutover", "retired")
#: largest form body accepted
_MAX_FORM: Final = 16 * 1024
#: parity reports kept in memory (the store keeps each user's summary only)
_REPORTS: Final = 500
#: seconds a refused login waits before answering
_LOGIN_DELAY: Final = 0.5

Handler = Callable[[Request], Awaitable[Response]]


class _Console:
    def __init__(self, bridge: Any, settings: ConsoleSettings, migrator: Any) -> None:
        self.bridge = bridge
        self.runtime = bridge.runtime
        self.settings = settings
        self.migrator = migrator
        self.signer = SessionSigner(settings)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(_HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["when"] = _when
        self.css = (_HERE / "static" / "console.css").read_bytes()
        self.registry = _metrics.make_registry(self.runtime.engine, clock=self.runtime.clock)
        self.counters = _metrics.ConsoleCounters(self.registry)
        self.reports: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    # -- plumbing ------------------------------------------------------------------------

    def session(self, request: Request) -> dict[str, Any] | None:
        return self.signer.load(request.cookies.get(SessionSigner.cookie))

    def operator(self, session: dict[str, Any] | None) -> str | None:
        if not self.settings.login:
            return "local"
        op = (session or {}).get("op")
        return op if isinstance(op, str) else None

    def set_session(self, response: Response, session: dict[str, Any], request: Request) -> None:
        response.set_cookie(
            SessionSigner.cookie,
            self.signer.dump(session),
            max_age=int(self.settings.session_ttl),
            path=_base(request) or "/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    def page(
        self,
        request: Request,
        name: str,
        session: dict[str, Any],
        code: int = 200,
        **context: Any,
    ) -> Response:
        flash = session.pop("flash", None)
        body = self.templates.get_template(name).render(
            base=_base(request),
            csrf=session["csrf"],
            operator=self.operator(session),
            login=self.settings.login,
            flash=flash,
            **context,
        )
        response = HTMLResponse(body, status_code=code)
        self.set_session(response, session, request)
        return response

    def redirect(
        self, request: Request, path: str, session: dict[str, Any] | None = None
    ) -> Response:
        response = RedirectResponse(_base(request) + path, status_code=303)
        if session is not None:
            self.set_session(response, session, request)
        return response

    async def form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form of a POST; None when it is not one (or too large)."""
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                return None
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            return None
        out: dict[str, str] = {}
        for key, value in pairs:
            out[key] = out[key] + "\n" + value if key in out else value
        return out

    def same_origin(self, request: Request) -> bool:
        """False when the browser says the form came from another origin. Browsers send
        ``Origin: null`` under the pages' ``Referrer-Policy: no-referrer``: that says
        nothing, and the CSRF token decides alone."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return True
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def checked_post(
        self, request: Request
    ) -> tuple[dict[str, Any], dict[str, str]] | Response:
        """The session and form of a POST whose CSRF token is right; else a 403."""
        session = self.session(request)
        form = await self.form(request)
        if (
            form is None
            or not self.same_origin(request)
            or not SessionSigner.csrf_ok(session, form.get("csrf"))
        ):
            self.counters.csrf_refused.inc()
            return PlainTextResponse(
                "refused: this form is stale or did not come from the console (CSRF); "
                "reload the page and try again",
                status_code=403,
            )
        assert session is not None
        return session, form

    def audit(self, operator: str, action: str, user: str | None, detail: dict[str, Any]) -> None:
        self.runtime.store.audit_log.audit(
            f"console:{operator}"[:64],
            f"console.{action}",
            app_user_id=user,
            detail={"operator": operator, **detail},
        )

    # -- pages ---------------------------------------------------------------------------

    async def index(self, request: Request, session: dict[str, Any]) -> Response:
        phase = request.query_params.get("phase", "")
        search = request.query_params.get("q", "")[:100]
        if phase not in (*PHASES, q.NOT_UNDER_MIGRATION):
            phase = q.NOT_UNDER_MIGRATION

        next_action = _NEXT.get(phase)
        to = TRANSITIONS[next_action][0] if next_action else None

        def load() -> tuple[dict[str, int], list[Any], list[Any], list[list[str]]]:
            with read(self.runtime.engine) as conn:
                counts = q.phase_counts(conn)
                users = q.users_in_phase(conn, phase, search=search, limit=200)
            plans = self.migrator.plan(users)
            states = [self.migrator.status(u) for u in users]
            # why the next step would be refused, from the store alone (no provider call)
            blocked = [self.migrator.blockers(u, to) if to else [] for u in users]
            return counts, plans, states, blocked

        counts, plans, states, blocked = await offload(load)
        rows = [
            {"plan": p, "parity": s.last_parity, "legacy": s.legacy_provider, "blocked": b}
            for p, s, b in zip(plans, states, blocked, strict=True)
        ]
        return self.page(
            request,
            "index.html",
            session,
            counts=counts,
            phases=PHASES,
            phase=phase,
            search=search,
            rows=rows,
            unmigrated=q.NOT_UNDER_MIGRATION,
            next_action=next_action,
        )

    async def user(self, request: Request, session: dict[str, Any]) -> Response:
        user = request.path_params["user"]
        rt = self.runtime
        accounts = await self.bridge.accounts(user)
        if not accounts and await offload(rt.store.routing.get_routing, user) is None:
            return self.page(request, "missing.html", session, code=404, user=user)
        try:
            decision: Any = await rt.router.aexplain(user, record=False)
            route_error = None
        except LookupError as exc:
            decision, route_error = None, str(exc)
        ids = [a.id for a in accounts if a.id is not None]

        def load() -> tuple[Any, list[Any], list[Any], list[Any]]:
            status = self.migrator.status(user)
            audit = rt.store.audit_log.audit_entries(app_user_id=user, limit=100)
            channels = [c for a in ids for c in rt.store.channels.list_channels(account_id=a)]
            with read(rt.engine) as conn:
                jobs = q.user_jobs(conn, user, ids)
            return status, audit, channels, jobs

        status, audit, channels, jobs = await offload(load)
        return self.page(
            request,
            "user.html",
            session,
            user=user,
            accounts=accounts,
            decision=decision,
            route_error=route_error,
            status=status,
            report=self.reports.get(user),
            audit=audit,
            channels=channels,
            jobs=jobs,
            transitions=TRANSITIONS,
            providers=sorted({a.provider for a in accounts}),
        )

    async def action(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        operator = self.operator(session)
        if operator is None:
            return self.redirect(request, "/login")
        user = request.path_params["user"]
        action = form.get("action", "")
        if action not in ACTIONS:
            return PlainTextResponse("unknown action", status_code=400)
        force = sorted(set(form.get("force", "").split()) & {"parity", "initial-sync"})
        if force and action != "cutover":
            return PlainTextResponse("only cutover can skip guards", status_code=400)
        provider = form.get("provider") or None
        if form.get("confirm") != "yes":
            preview = await self.preview(user, action, force, provider)
            return self.page(
                request,
                "confirm.html",
                session,
                user=user,
                action=action,
                force=force,
                provider=provider,
                preview=preview,
                what=TRANSITIONS[action][1] if action in TRANSITIONS else "",
            )
        outcome, message, detail = await self.perform(user, action, force, provider)
        self.counters.actions.labels(action, outcome).inc()
        await offload(self.audit, operator, action, user, {"outcome": outcome, **detail})
        session["flash"] = f"{action} {user}: {outcome}" + (f": {message}" if message else "")
        return self.redirect(request, "/users/" + quote(user, safe=""), session)

    async def preview(
        self, user: str, action: str, force: list[str], provider: str | None
    ) -> dict[str, Any]:
        """What a confirmed action would do: the guards' answer now (a dry run)."""
        from ..migration import ConcurrentTransition, GuardFailed

        if action == "pin":
            facts = await self.runtime.auser_facts(user)
            if not any(a.provider == provider and a.active for a in facts.accounts):
                reason = f"{user} has no active {provider} account to pin to"
                return {"ok": False, "reasons": [reason]}
        if action == "retry":
            dead = await self.dead_jobs(user)
            if not dead:
                return {"ok": False, "reasons": [f"{user} has no dead jobs"]}
            kinds = ", ".join(sorted({j.kind for j in dead}))
            what = f"{len(dead)} dead job(s) ({kinds}) queued again with a fresh attempt budget"
            return {"ok": True, "reasons": [what]}
        if action not in TRANSITIONS:
            return {"ok": True, "reasons": []}
        try:
            moves = await self.migrator.move(
                user, TRANSITIONS[action][0], force=_force(force), dry_run=True
            )
        except GuardFailed as exc:
            return {"ok": False, "reasons": list(exc.reasons)}
        except (ConcurrentTransition, CalbridgeError) as exc:
            return {"ok": False, "reasons": [str(exc)]}
        return {"ok": True, "reasons": [] if moves else ["already in that phase: nothing to do"]}

    async def perform(
        self, user: str, action: str, force: list[str], provider: str | None
    ) -> tuple[str, str, dict[str, Any]]:
        """Run one action with the CLI's guards: (outcome, message, audit detail)."""
        from ..migration import ConcurrentTransition, GuardFailed

        detail: dict[str, Any] = {}
        try:
            if action in TRANSITIONS:
                to = TRANSITIONS[action][0]
                detail = {"to": str(to), "forced": force}
                moved = await self.migrator.move(user, to, force=_force(force))
                return ("moved" if moved else "already"), "", detail
            if action in ("pin", "unpin"):
                target = provider if action == "pin" else None
                detail = {"provider": target}
                await self.bridge.pin(user, target)
                return "done", "", detail
            if action == "retry":
                return await self.retry_dead(user)
            report = await self.migrator.check_parity(user)
            self.reports[user] = {"at": time.time(), **report.as_dict()}
            self.reports.move_to_end(user)
            while len(self.reports) > _REPORTS:
                self.reports.popitem(last=False)
            outcome = "clean" if report.clean else "differs"
            return outcome, "", {"compared": report.compared}
        except GuardFailed as exc:
            detail["guards"] = sorted(str(k) for k in exc.kinds)
            held = "; held on legacy, now under migration" if exc.held else ""
            return "refused", "; ".join(exc.reasons) + held, detail
        except ConcurrentTransition as exc:
            return "conflict", str(exc), detail
        except (CalbridgeError, LookupError) as exc:
            return "refused", str(exc), detail

    async def dead_jobs(self, user: str) -> list[q.JobRow]:
        """The user's dead jobs (their payload names the user or one of its accounts)."""
        accounts = await self.bridge.accounts(user)
        ids = [a.id for a in accounts if a.id is not None]

        def load() -> list[q.JobRow]:
            with read(self.runtime.engine) as conn:
                return q.user_jobs(conn, user, ids, states=("dead",))

        return await offload(load)

    async def retry_dead(self, user: str) -> tuple[str, str, dict[str, Any]]:
        """Queue the user's dead jobs again, as ``calbridge jobs --retry`` does for each
        (a job whose coalesce key already has a queued job is left: that one does the work)."""
        dead = await self.dead_jobs(user)
        if not dead:
            return "refused", f"{user} has no dead jobs", {}
        queued = [j.id for j in dead if await offload(self.runtime.queue.retry_dead, j.id)]
        left = [j.id for j in dead if j.id not in queued]
        detail = {"requeued": queued, "left": left}
        message = f"{len(left)} left: a job of the same work is already queued" if left else ""
        return ("done" if queued else "already"), message, detail

    async def cohort(self, request: Request) -> Response:
        """A transition for every user of one phase (``Migrator.bulk``), confirmed first."""
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        operator = self.operator(session)
        if operator is None:
            return self.redirect(request, "/login")
        phase, action = form.get("phase", ""), form.get("action", "")
        if phase not in (*PHASES, q.NOT_UNDER_MIGRATION) or action not in TRANSITIONS:
            return PlainTextResponse("unknown phase or action", status_code=400)

        def users() -> list[str]:
            with read(self.runtime.engine) as conn:
                return q.users_in_phase(conn, phase, limit=100_000)

        selected = await offload(users)
        to = TRANSITIONS[action][0]
        if form.get("confirm") != "yes":
            dry = await self.migrator.bulk(selected, to, dry_run=True)
            return self.page(
                request,
                "confirm_cohort.html",
                session,
                phase=phase,
                action=action,
                what=TRANSITIONS[action][1],
                users=selected,
                dry=dry,
            )
        result = await self.migrator.bulk(selected, to)
        self.counters.actions.labels(f"cohort-{action}", "done").inc()
        await offload(
            self.audit,
            operator,
            f"cohort.{action}",
            None,
            {
                "from_phase": phase or "not_under_migration",
                "to": str(to),
                "moved": list(result.moved),
                "already": len(result.already),
                "refused": [u for u, _ in result.refused],
            },
        )
        session["flash"] = (
            f"{action} of {len(selected)} users: moved {len(result.moved)}, already "
            f"{len(result.already)}, refused {len(result.refused)}"
        )
        return self.redirect(request, "/?phase=" + quote(phase), session)

    # -- login ---------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        session = self.session(request) or SessionSigner.fresh()
        if self.operator(session) is not None:
            return self.redirect(request, "/", session)
        return self.page(request, "login.html", session, error=None)

    async def login(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        if not self.settings.login:
            return self.redirect(request, "/")
        name = form.get("operator", "").strip()
        assert self.settings.password is not None
        good = verify_password(form.get("password", ""), self.settings.password)
        if not good or not OPERATOR_RE.fullmatch(name):
            self.counters.logins.labels("refused").inc()
            await _sleep(_LOGIN_DELAY)
            error = (
                "wrong password"
                if not good
                else "give your name (letters, digits, . _ @ + -): it names you in the audit log"
            )
            return self.page(request, "login.html", session, code=401, error=error)
        self.counters.logins.labels("ok").inc()
        await offload(self.audit, name, "login", None, {})
        return self.redirect(request, "/", SessionSigner.fresh(name))

    async def logout(self, request: Request) -> Response:
        checked = await self.checked_post(request)
        if isinstance(checked, Response):
            return checked
        return self.redirect(request, "/login", SessionSigner.fresh())

    # -- metrics and static ----------------------------------------------------------------

    async def style(self, request: Request) -> Response:
        return Response(
            self.css,
            media_type="text/css",
            headers={"cache-control": "public, max-age=3600"},
        )

    def guarded(self, handler: Callable[[Request, dict[str, Any]], Awaitable[Response]]) -> Handler:
        """A page for logged-in operators only (others go to the login page)."""

        async def endpoint(request: Request) -> Response:
            session = self.session(request) or SessionSigner.fresh()
            if self.operator(session) is None:
                return self.redirect(request, "/login", session)
            return await handler(request, session)

        return endpoint


_NEXT: Final = {
    q.NOT_UNDER_MIGRATION: "start",
    "legacy": "start",
    "shadow": "dual",
    "dual": "cutover",
    "cutover": "retire",
}


def _force(names: list[str]) -> Any:
    from ..migration import GuardKind

    return [GuardKind(n) for n in names]


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _when(value: float | int | None, unit: str = "s") -> str:
    """An epoch time (seconds, or ``ms``) as UTC text."""
    if value is None:
        return "-"
    seconds = float(value) / (1000.0 if unit == "ms" else 1.0)
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def make_console_app(bridge: Any, settings: ConsoleSettings, *, migrator: Any = None) -> SecureApp:
    """The operator console for ``bridge`` (a :class:`calbridge.CalBridge`).

    Mount it anywhere (its links follow the mount's ``root_path``); it answers
    ``/`` (cohorts by phase), ``/users/<user>`` (one user, with actions), ``/login``,
    ``/metrics`` (Prometheus) and ``/static/console.css``. ``migrator``: a
    :class:`calbridge.migration.Migrator` (default: one on the bridge's runtime).
    """
    if migrator is None:
        from ..migration import Migrator

        migrator = Migrator(bridge.runtime)
    console = _Console(bridge, settings, migrator)
    app = SecureApp(
        routes=[
            Route("/", console.guarded(console.index)),
            Route("/users/{user:path}", console.guarded(console.user)),
            Route("/actions/{user:path}", console.action, methods=["POST"]),
            Route("/cohort", console.cohort, methods=["POST"]),
            Route("/login", console.login_page),
            Route("/login", console.login, methods=["POST"]),
            Route("/logout", console.logout, methods=["POST"]),
            Route(
                "/metrics",
                _metrics.metrics_endpoint(
                    console.registry,
                    token=settings.metrics_token.reveal() if settings.metrics_token else None,
                ),
            ),
            Route("/static/console.css", console.style),
        ]
    )
    app.csp = CONSOLE_CSP
    app.state.console = console
    return app
