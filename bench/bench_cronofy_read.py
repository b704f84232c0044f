"""Cronofy read benchmark: calbridge's Cronofy plugin against pycronofy, same sandbox, same run.

What it does:

1. Starts the Cronofy sandbox in a child process (uvicorn on 127.0.0.1, port 0), with two
   users whose primary calendars hold 10,000 and 100,000 events, a page size of 100 and
   the sandbox's rate limiter off (the documented 50/s and 500/min would make this a
   benchmark of the limit). The plugin's client-side limiter is off for the same reason.
2. Reads the 10,000 events (100 pages) over loopback through the plugin (domain
   ``Event`` objects, page by page) and through pycronofy (``read_events``, raw dicts),
   alternating, several rounds; reports median events/s of each and the ratio.
3. Measures calbridge's own work per event on the recorded pages, with no network:
   ``json.loads`` + conversion to ``calbridge.Event``, and the whole client path through
   ``list_events`` over an ``httpx.MockTransport`` serving those pages.
   calbridge sends through its default transport (httpx's own, pooled).
4. Streams 10,000 and 100,000 events through ``list_events`` under ``tracemalloc`` and
   reports the peak: flat memory means the peak does not grow with the number of events.

Prints a table and rewrites the Cronofy section of docs/benchmarks.md.
``python bench/bench_cronofy_read.py [--rounds N] [--no-docs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import pathlib
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx

import calbridge
import calbridge.sandbox

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"  # the sandbox's throwaway secret
USERS = {"bench10k@example.com": 10_000, "bench100k@example.com": 100_000}
PAGE_SIZE = 100
LATENCY = 0.02  # seconds per request in the latency rows
REDIRECT = "https://bench.example/callback"
ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- cronofy-bench:start -->", "<!-- cronofy-bench:end -->"


# --------------------------------------------------------------------------- the sandbox process


def seed_meetings(world: Any, calendar_id: str, count: int) -> None:
    """``count`` 45-minute meetings spread evenly over 190 days from today (sandbox clock),
    each with a summary, description, location and two of eight colleagues; the calendar
    every read benchmark reads (``world``: a :class:`calbridge.sandbox.World`)."""
    base = world.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    people = [
        calbridge.Attendee(email=f"person{i}@example.com", name=f"Person {i}") for i in range(8)
    ]
    for i in range(count):
        start = base + dt.timedelta(minutes=i * 190 * 24 * 60 // count)
        world.insert_event(
            calendar_id,
            start=calbridge.EventTime.zoned(start, "UTC"),
            end=calbridge.EventTime.zoned(start + dt.timedelta(minutes=45), "UTC"),
            summary=f"Meeting {i} about the quarterly plan",
            description="Agenda: review, decide, assign.",
            location="Room 4.12",
            attendees=(people[i % 8], people[(i + 3) % 8]),
        )


def serve(tls_dir: str | None = None) -> None:
    """Child process: seed a world and serve the Cronofy sandbox until killed (HTTPS with
    the private CA in ``tls_dir`` when given)."""
    import uvicorn
    from calbridge_cronofy.sandbox import create_app

    from calbridge.sandbox import World, build_app

    world = World()
    world.add_application(CLIENT_ID, CLIENT_SECRET)
    build_app(world, {"cronofy": create_app}, control=False)
    settings = world.views["cronofy"].settings
    settings.page_size = PAGE_SIZE
    settings.rate_limits = ()
    app = build_app(world, {"cronofy": create_app})
    for email, count in USERS.items():
        world.add_user(email)
        seed_meetings(world, world.primary_calendar(email).id, count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
    tls = calbridge.sandbox.make_tls_files(tls_dir) if tls_dir else None
    scheme = "https" if tls else "http"
    print(json.dumps({"base": f"{scheme}://127.0.0.1:{port}"}), flush=True)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    uvicorn.Server(config).run(sockets=[sock])


def replay(folder: str) -> None:
    """Child process: serve recorded sandbox pages verbatim (the server does no work).

    ``folder`` holds ``origin`` (the sandbox's origin, rewritten to ours in the bodies),
    ``first`` (page 1, answered for any query) and one file per later page token.
    """
    import uvicorn

    root = pathlib.Path(folder)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}".encode()
    old = (root / "origin").read_bytes()
    bodies = {
        f"/cronofy/v1/events/pages/{f.name}": f.read_bytes().replace(old, origin)
        for f in root.iterdir()
        if f.name not in ("origin", "first")
    }
    bodies["/cronofy/v1/events"] = (root / "first").read_bytes().replace(old, origin)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = bodies.get(scope["path"], b"{}")
        await send(
            {
                "type": "http.response.start",
                "status": 200 if scope["path"] in bodies else 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    sock.listen(128)
    print(json.dumps({"base": origin.decode()}), flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start this script as a child server; returns it and the base URL it printed."""
    child = subprocess.Popen(
        [sys.executable, __file__, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())["base"]


def save_pages(pages: list[tuple[str, bytes]], folder: pathlib.Path) -> None:
    first = httpx.URL(pages[0][0])
    (folder / "origin").write_bytes(f"{first.scheme}://{first.host}:{first.port}".encode())
    (folder / "first").write_bytes(pages[0][1])
    for url, body in pages[1:]:
        (folder / url.rsplit("/", 1)[1]).write_bytes(body)


def compare(
    base: str,
    session: calbridge.Session,
    cal: str,
    token: str,
    rounds: int,
    *,
    read_concurrency: int = 4,
    transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    cpu: list[tuple[float, float]] | None = None,
    splits: list[bool] | None = None,
) -> Any:
    """events/s of both clients, alternating, after one warm-up read each; (ours, theirs).

    With ``cpu``, each round appends this process's CPU seconds per page of both reads
    (the sandbox runs in its own process and is not counted); with ``splits``, whether
    calbridge's read was split into sub-windows (more than one query with a ``from``).

    calbridge keeps one HTTP client for all rounds, as a bridge does (through ``transport()``
    when given, else its default: httpx's own, pooled); pycronofy makes a new connection per
    request, as it always does.
    """
    expected = USERS["bench10k@example.com"]

    async def run() -> tuple[list[float], list[float]]:
        ours: list[float] = []
        theirs: list[float] = []
        chosen = transport() if transport is not None else None
        async with calbridge.make_http_client(transport=chosen, verify=verify()) as http:
            provider = make_provider(base, http, read_concurrency=read_concurrency)
            queries = [0]

            async def note(request: httpx.Request) -> None:
                if "from" in request.url.params:
                    queries[0] += 1

            http.event_hooks["request"].append(note)

            async def count() -> int:
                n = 0
                async for page in provider.list_events(session, cal, window()):
                    n += len(page)
                return n

            assert await count() == read_pycronofy(base, token, cal) == expected  # warm-up
            for _ in range(rounds):
                t, c = time.perf_counter(), time.process_time()
                queries[0] = 0
                n1 = await count()
                ours.append(n1 / (time.perf_counter() - t))
                c1 = time.process_time() - c
                t, c = time.perf_counter(), time.process_time()
                n2 = read_pycronofy(base, token, cal)  # blocks the loop: nothing else runs
                theirs.append(n2 / (time.perf_counter() - t))
                c2 = time.process_time() - c
                assert n1 == n2 == expected, (n1, n2)
                if cpu is not None:
                    pages = -(-expected // PAGE_SIZE)
                    cpu.append((c1 / pages, c2 / pages))
                if splits is not None:
                    splits.append(queries[0] > 1)
        return ours, theirs

    return asyncio.run(run())


# --------------------------------------------------------------------------- clients


def make_provider(
    base: str,
    http: httpx.AsyncClient,
    *,
    read_concurrency: int = 4,
) -> Any:
    """The plugin as an application configures it (``read_concurrency=1``: one chain)."""
    from calbridge_cronofy import CronofyProvider

    return CronofyProvider(
        http=http,
        settings=calbridge.ProviderSettings(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            base_urls={"api": f"{base}/cronofy", "app": f"{base}/cronofy"},
            options={
                "rate_limit_per_second": 0,
                "rate_limit_per_minute": 0,
                "google_event_ids": False,  # pycronofy cannot ask for them: same request
                "read_concurrency": read_concurrency,
            },
        ),
    )


async def connect(base: str, email: str) -> tuple[calbridge.Session, str, str]:
    """Individual Connect through the sandbox: session, primary calendar id, access token."""
    async with calbridge.make_http_client(verify=verify()) as http:
        provider = make_provider(base, http)
        url = provider.authorization_url(
            calbridge.AuthorizationRequest(redirect_uri=REDIRECT, state="b", login_hint=email)
        )
        answer = await http.get(url)
        query = urllib.parse.urlsplit(answer.headers["location"]).query
        grant = await provider.exchange_code(
            code=dict(urllib.parse.parse_qsl(query))["code"], redirect_uri=REDIRECT
        )
        session = calbridge.Session(
            account=calbridge.Account(
                app_user_id=email, provider="cronofy", provider_account_id=grant.provider_account_id
            ),
            tokens=calbridge.StaticTokenSource(tokens=grant.tokens),
        )
        cals = await provider.list_calendars(session)
        primary = next(c for c in cals if c.primary)
        return session, primary.id, grant.tokens.access_token.reveal()


def verify() -> ssl.SSLContext | bool:
    """Trust the TLS sandbox's private CA when one is in use (``REQUESTS_CA_BUNDLE``, which
    is also how pycronofy's requests is told)."""
    ca = os.environ.get("REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=ca) if ca else True


def window() -> calbridge.TimeRange:
    start = dt.datetime(2026, 1, 4, tzinfo=dt.UTC)
    return calbridge.TimeRange(start=start, end=start + dt.timedelta(days=200))


async def read_calbridge(
    base: str,
    session: calbridge.Session,
    calendar_id: str,
    transport: Any = None,
    **options: Any,
) -> int:
    async with calbridge.make_http_client(transport=transport, verify=verify()) as http:
        provider = make_provider(base, http, **options)
        n = 0
        async for page in provider.list_events(session, calendar_id, window()):
            n += len(page)
        return n


def read_pycronofy(base: str, token: str, calendar_id: str) -> int:
    import pycronofy
    from pycronofy import settings as pysettings

    pysettings.API_BASE_URL = f"{base}/cronofy"
    client = pycronofy.Client(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, access_token=token)
    w = window()
    pages = client.read_events(
        calendar_ids=(calendar_id,),
        from_date=w.start,
        to_date=w.end,
        tzid="Etc/UTC",
        include_managed=True,
        localized_times=True,
    )
    return sum(1 for _ in pages)


def record_pages(base: str, token: str, calendar_id: str) -> list[tuple[str, bytes]]:
    """The raw pages of the 10k read (URL, body), as the sandbox sent them."""
    w = window()
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("tzid", "Etc/UTC"),
        ("from", w.start.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("to", w.end.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("calendar_ids[]", calendar_id),
        ("include_managed", "true"),
        ("include_deleted", "false"),
        ("include_moved", "false"),
        ("localized_times", "true"),
    ]
    out = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, verify=verify()) as http:
        url: str | None = f"{base}/cronofy/v1/events"
        first = True
        while url:
            r = http.get(url, params=params if first else None)
            r.raise_for_status()
            out.append((str(r.url), r.content))
            first = False
            url = r.json()["pages"].get("next_page") or None
    return out


# --------------------------------------------------------------------------- measurements


def floor(base: str, token: str, pages: list[tuple[str, bytes]]) -> float:
    """events/s of fetching the recorded page URLs again, keep-alive, no decoding: the
    sandbox's own speed, which bounds every client."""
    n = sum(len(json.loads(b)["events"]) for _, b in pages)
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, verify=verify()) as http:
        t = time.perf_counter()
        for url, _ in pages:
            http.get(url).raise_for_status()
        return n / (time.perf_counter() - t)


def own_cost(pages: list[tuple[str, bytes]]) -> dict[str, float]:
    """CPU µs per event: JSON decode, conversion, and the whole client path (no network)."""
    from calbridge_cronofy._convert import PROVIDER, event_from_read
    from calbridge_cronofy._wire import decode_event, decode_page

    bodies = [b for _, b in pages]
    total = sum(len(json.loads(b)["events"]) for b in bodies)
    reps = 25

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(reps):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return min(times) / total * 1e6

    def split() -> tuple[float, float]:
        # page by page, as a stream: decode (the page, then each event's JSON into its
        # wire struct), convert (to calbridge.Event, raw kept as its JSON text), drop
        dec = conv = 0.0
        clock = time.process_time  # CPU time: what other processes do is not ours
        for body in bodies:
            t0 = clock()
            wires = [(decode_event(text), text) for text in decode_page(body).events]
            t1 = clock()
            for wire, text in wires:
                event_from_read(wire, calbridge.RawPayload(text, PROVIDER))
            t2 = clock()
            dec += t1 - t0
            conv += t2 - t1
        return dec, conv

    runs = [split() for _ in range(reps)]
    decode = min(r[0] for r in runs) / total * 1e6
    convert = min(r[1] for r in runs) / total * 1e6

    by_url = dict(pages)
    first_path = httpx.URL(pages[0][0]).path

    def handler(request: httpx.Request) -> httpx.Response:
        body = by_url.get(str(request.url))
        if body is None and request.url.path == first_path:
            body = pages[0][1]
        assert body is not None, request.url
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    base = pages[0][0].split("/cronofy/")[0]
    session = calbridge.Session(
        account=calbridge.Account(app_user_id="m", provider="cronofy", provider_account_id="m"),
        tokens=calbridge.StaticTokenSource(tokens=calbridge.TokenSet(access_token="t")),
    )
    cal = urllib.parse.parse_qs(httpx.URL(pages[0][0]).query.decode())["calendar_ids[]"][0]

    async def whole_path() -> float:
        # one client for all reads, as a bridge keeps it: the steady state, not set-up
        async with calbridge.make_http_client(transport=httpx.MockTransport(handler)) as http:
            provider = make_provider(base, http, read_concurrency=1)  # the recorded chain
            times = []
            for _ in range(reps):
                t = time.process_time()
                async for _page in provider.list_events(session, cal, window()):
                    pass
                times.append(time.process_time() - t)
            return min(times) / total * 1e6

    path = asyncio.run(whole_path())
    return {"decode": decode, "convert": convert, "path": path, "events": total}


def peak_memory(
    base: str, session: calbridge.Session, calendar_id: str, *, split: bool, runs: int
) -> tuple[int, int]:
    """(events, peak bytes) of streaming one calendar's events under tracemalloc, as one
    chain of pages or (``split``) always as four concurrent sub-window reads: the highest
    peak of ``runs`` reads (how many pages are in memory at once depends on timing, and
    a long read has more chances to meet its worst moment than a short one)."""
    options = {"read_concurrency": 4 if split else 1}
    n, highest = 0, 0
    for _ in range(runs):
        tracemalloc.start()
        try:
            n = asyncio.run(read_calbridge(base, session, calendar_id, **options))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        highest = max(highest, peak)
    return n, highest


# --------------------------------------------------------------------------- report


def host_speed() -> float:
    """CPU milliseconds of a fixed pure-Python loop (best of 5): how fast this (shared)
    host runs Python right now, to read the other rows against."""
    best = math.inf
    for _ in range(5):
        t = time.process_time()
        x = 0
        for i in range(1_000_000):
            x += i
        best = min(best, time.process_time() - t)
    return best * 1e3


def paired(ours: list[float], theirs: list[float]) -> float:
    """The median of per-round ratios (ours / theirs)."""
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
    return "\n".join(lines)


def update_doc(section: str) -> None:
    text = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nRun them all with `python -m bench`.\n"
    )
    block = f"{START}\n{section}\n{END}"
    if START in text and END in text:
        text = re.sub(
            re.escape(START) + r".*?" + re.escape(END), lambda _m: block, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--replay", help=argparse.SUPPRESS)
    parser.add_argument("--tls", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args()
    if args.serve:
        serve(args.tls)
        return 0
    if args.replay:
        replay(args.replay)
        return 0

    load_before = os.getloadavg()[0]
    speed_before = host_speed()
    child, base = start("--serve")
    try:
        (s10, cal10, tok10), (s100, cal100, _tok100) = (
            asyncio.run(connect(base, email)) for email in USERS
        )
        plain_cpu: list[tuple[float, float]] = []
        plain_split: list[bool] = []
        ours, theirs = compare(
            base, s10, cal10, tok10, args.rounds, cpu=plain_cpu, splits=plain_split
        )
        pages = record_pages(base, tok10, cal10)
        sandbox_eps = max(floor(base, tok10, pages) for _ in range(3))
        # CPU time still moves with the host's other tenants (for minutes at a time): the best
        # of four batches, two now and two minutes later
        batches = [own_cost(pages) for _ in range(2)]
        # as many pages read in all at both sizes: 10 reads of 10,000, 1 of 100,000
        small = peak_memory(base, s10, cal10, split=False, runs=10)
        large = peak_memory(base, s100, cal100, split=False, runs=1)
        small_split = peak_memory(base, s10, cal10, split=True, runs=10)
        large_split = peak_memory(base, s100, cal100, split=True, runs=1)
        # a real provider answers in tens of milliseconds, not microseconds: the same
        # sandbox with its latency fault on (every request waits LATENCY seconds)
        httpx.post(f"{base}/_sandbox/faults/cronofy", json={"latency": LATENCY}).raise_for_status()
        lat_split: list[bool] = []
        l_ours, l_theirs = compare(
            base, s10, cal10, tok10, max(3, args.rounds // 3), splits=lat_split
        )
    finally:
        child.terminate()
        child.wait(timeout=10)
    with tempfile.TemporaryDirectory() as folder:
        save_pages(pages, pathlib.Path(folder))
        child, replay_base = start("--replay", folder)
        try:
            # the replay knows one chain of pages only: no sub-window reads
            r_ours, r_theirs = compare(
                replay_base, s10, cal10, tok10, args.rounds, read_concurrency=1
            )
        finally:
            child.terminate()
            child.wait(timeout=10)
    # the same over HTTPS, as the real Cronofy serves it: a second sandbox with a private CA
    with tempfile.TemporaryDirectory() as tls_dir:
        child, tls_base = start("--serve", "--tls", tls_dir)
        os.environ["REQUESTS_CA_BUNDLE"] = str(pathlib.Path(tls_dir) / "ca.pem")
        try:
            ts10, tcal10, ttok10 = asyncio.run(connect(tls_base, "bench10k@example.com"))
            tls_split: list[bool] = []
            t_ours, t_theirs = compare(
                tls_base, ts10, tcal10, ttok10, args.rounds, splits=tls_split
            )
            batches += [own_cost(pages) for _ in range(2)]
        finally:
            del os.environ["REQUESTS_CA_BUNDLE"]
            child.terminate()
            child.wait(timeout=10)

    cost = {k: min(b[k] for b in batches) for k in batches[0]}
    # best of the alternating rounds: the machine may be shared, and the best round is the
    # one least disturbed by others (the same rule for both clients)
    eps_ours, eps_theirs = max(ours), max(theirs)
    # each round reads with both clients back to back, so a round's ratio compares them
    # under the same load; the median of those ratios is the headline
    ratio = paired(ours, theirs)
    tls_ratio = paired(t_ours, t_theirs)
    lat_ratio = paired(l_ours, l_theirs)
    own = cost["decode"] + cost["convert"]
    rows = [
        ("events read per run / pages", f"{USERS['bench10k@example.com']:,} / {len(pages)}"),
        ("calbridge events/s (best round)", f"{eps_ours:,.0f}"),
        ("pycronofy events/s (best round)", f"{eps_theirs:,.0f}"),
        (
            "calbridge / pycronofy, median of rounds",
            f"{statistics.median(ours):,.0f} / {statistics.median(theirs):,.0f}",
        ),
        (
            "ratio calbridge / pycronofy, plain HTTP (median of paired rounds)",
            f"{ratio:.2f}x (target >= 2x)",
        ),
        (
            "over HTTPS (TLS sandbox): calbridge / pycronofy events/s, best (median)",
            f"{max(t_ours):,.0f} / {max(t_theirs):,.0f} "
            f"({statistics.median(t_ours):,.0f} / {statistics.median(t_theirs):,.0f})",
        ),
        (
            "ratio calbridge / pycronofy over HTTPS (median of paired rounds)",
            f"{tls_ratio:.2f}x (target >= 2x)",
        ),
        (
            f"{LATENCY * 1000:.0f} ms per request (sandbox latency fault): "
            "calbridge / pycronofy events/s, best",
            f"{max(l_ours):,.0f} / {max(l_theirs):,.0f}",
        ),
        (
            f"ratio with {LATENCY * 1000:.0f} ms per request (median of paired rounds)",
            f"{lat_ratio:.2f}x",
        ),
        (
            "client CPU per page, plain HTTP (median of rounds): calbridge / pycronofy",
            f"{statistics.median(c for c, _ in plain_cpu) * 1e3:.2f} / "
            f"{statistics.median(c for _, c in plain_cpu) * 1e3:.2f} ms",
        ),
        (
            "calbridge reads split into sub-windows: plain HTTP / HTTPS / "
            f"{LATENCY * 1000:.0f} ms per request",
            " / ".join(f"{sum(x)} of {len(x)}" for x in (plain_split, tls_split, lat_split)),
        ),
        ("sandbox alone: page fetches, no decoding", f"{sandbox_eps:,.0f} events/s"),
        (
            "replayed pages (server does no work): calbridge / pycronofy events/s",
            f"{max(r_ours):,.0f} / {max(r_theirs):,.0f} = {max(r_ours) / max(r_theirs):.2f}x",
        ),
        ("calbridge / sandbox alone", f"{eps_ours / sandbox_eps:.2f}"),
        ("own work: JSON decode µs/event", f"{cost['decode']:.1f}"),
        ("own work: normalise to Event µs/event", f"{cost['convert']:.1f}"),
        ("own work: decode + normalise µs/event", f"{own:.1f} (target <= 20)"),
        ("whole client path, no network µs/event", f"{cost['path']:.1f}"),
        (
            f"peak memory streaming {small[0]:,} / {large[0]:,} events, one chain",
            f"{small[1] / 1e6:.1f} / {large[1] / 1e6:.1f} MB "
            f"(growth {large[1] / small[1]:.2f}x, flat = ~1)",
        ),
        (
            f"peak memory streaming {small_split[0]:,} / {large_split[0]:,} events, 4 sub-windows",
            f"{small_split[1] / 1e6:.1f} / {large_split[1] / 1e6:.1f} MB "
            f"(growth {large_split[1] / small_split[1]:.2f}x, flat = ~1)",
        ),
    ]
    rows.append(
        ("load average (1 min) before / after", f"{load_before:.1f} / {os.getloadavg()[0]:.1f}")
    )
    rows.append(
        (
            "host speed: a fixed pure-Python loop, ms CPU before / after (lower = faster)",
            f"{speed_before:.0f} / {host_speed():.0f}",
        )
    )
    print(table(rows))
    if not args.no_docs:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        flat = large[1] < 1.5 * small[1] and large_split[1] < 1.5 * small_split[1]
        verdict = {True: "met", False: "NOT met"}
        section = (
            "## Cronofy: reading events\n\n"
            "`python bench/bench_cronofy_read.py` (part of `python -m bench`). The Cronofy "
            "sandbox runs in a child process on loopback (page size 100, rate limits off on "
            "both sides); calbridge reads through `CronofyProvider.list_events` (domain "
            "`Event` objects, page by page, next page requested before the current one is "
            "handed out), pycronofy 2.1.1 through `read_events` (raw dicts from "
            "`json.loads`, one new connection per page, as it always does). Same sandbox, "
            f"same run, {args.rounds} rounds each reading with both clients back to back; "
            "ratios are the median of the rounds' ratios, events/s the best round. The "
            "HTTPS rows use a second sandbox serving TLS with a throwaway private CA "
            "(`calbridge sandbox serve --tls-dir`), which both clients trust. Own work is "
            "measured on the recorded pages with no network (CPU time, best of 4 x 25 runs "
            "spread over the benchmark). Peak "
            "memory is tracemalloc's while streaming, the highest of 10 reads of 10,000 "
            "events against one read of 100,000 (as many pages in all). The load "
            "average and the host speed row show how busy the (shared, virtual) machine "
            "was: its speed varies from run to run, and every CPU-bound row moves with "
            "it.\n\n"
            f"Last run {stamp}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs:\n\n"
            + table(rows)
            + "\n\n"
            + (
                "What the numbers say. Targets: own work <= 20 µs per event "
                f"{verdict[own <= 20]} ({own:.1f}); memory flat {verdict[flat]}; "
                f">= 2x pycronofy's events/s {verdict[ratio >= 2]} over plain HTTP "
                f"({ratio:.2f}x) and {verdict[tls_ratio >= 2]} over HTTPS ({tls_ratio:.2f}x); "
                f"with {LATENCY * 1000:.0f} ms per request, {lat_ratio:.2f}x. "
                "Per event, calbridge decodes each page with msgspec into wire structs "
                f"({cost['decode']:.1f} µs) and builds typed, validated `calbridge.Event` "
                f"values ({cost['convert']:.1f} µs), keeping each event's JSON text as its "
                "lazily decoded `raw`; pycronofy runs `json.loads` and hands out dicts, "
                "leaving that work to the application. calbridge sends through httpx's "
                "own transport with pooled connections (bench_realistic.py shows why not "
                "aiohttp's any more). "
                f"The sandbox itself is cheap ({sandbox_eps:,.0f} events/s fetched with no "
                "decoding), so on plain HTTP both clients are bound by their own CPU on this "
                "machine: calbridge overlaps its work with the sandbox's (page N+1 is on the "
                "wire before page N is converted; a read of at least four pages runs as "
                "four concurrent sub-window chains, which on loopback, where the sandbox "
                "answers within the time a page converts, costs more than it hides: four "
                "chains share this machine's CPUs with the sandbox and the first page is "
                "read twice; see the split row), so its rate is bounded by its own CPU per "
                "page, while pycronofy's "
                "is bounded by its CPU plus the sandbox's time per page, in turn. "
                "calbridge's client CPU per page (pooled request, decode and typed "
                "conversion) is not half of pycronofy's (a new connection, the request and "
                "`json.loads`; see the CPU row), which keeps the ratio under 2x on this "
                "machine whenever the sandbox answers fast; the replayed pages row shows the "
                "same clients against a server that does no work. Over HTTPS, which is "
                "the only way the real Cronofy answers, pycronofy pays a TLS handshake for "
                "every page while calbridge keeps pooled connections. When the provider "
                "takes time to answer, as every real one does, the concurrent sub-window "
                "reads hide the waiting while pycronofy waits for each page in turn. "
                "Memory does not grow with the number of events: one chain holds at most "
                "two pages; split "
                "reads hold up to about three encoded pages per sub-window, however long "
                "the window."
            )
        )
        update_doc(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
