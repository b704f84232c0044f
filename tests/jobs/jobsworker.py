"""A worker process for the crash, fencing and load tests.

Runs :class:`calbridge.jobs.Worker` on ``--url`` with the handler ``effect``. Its payload:

* ``crash``: where the worker kills itself with SIGKILL on the job's first attempt:
  ``after_claim`` (before the handler runs), ``after_effect`` (the effect is committed),
  ``before_ack`` (the handler returned, the ack is not sent); or ``stop_before_effect``:
  the process SIGSTOPs itself, and after SIGCONT tries to write the effect with its
  (by then stale) fencing token;
* ``sleep``: seconds the handler sleeps (after recording its start time);
* ``poison``: the handler always raises.

Each handler run appends ``run <job> <token> <pid> <start> <end> <serial_key>`` to ``--log``
(``time.monotonic``, system-wide on Linux, so intervals compare across processes).

``$JOBS_TEST_CLOCK_SKEW`` (seconds) sets this process's wall clock (``time.time``) ahead
or behind, before calbridge is imported: a host whose clock is off.
"""

from __future__ import annotations

import os
import time

_SKEW = float(os.environ.get("JOBS_TEST_CLOCK_SKEW") or 0)
if _SKEW:
    _real_time = time.time

    def _skewed_time() -> float:
        return _real_time() + _SKEW

    time.time = _skewed_time

import argparse  # noqa: E402 - after the clock is skewed
import asyncio  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from sqlalchemy.dialects import postgresql, sqlite  # noqa: E402

from calbridge.jobs import HandlerRegistry, Job, JobQueue, Worker  # noqa: E402
from calbridge.store import create_engine, is_postgres, write  # noqa: E402
from tests.jobs.jobsupport import effects  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--lease", type=float, default=30.0)
    ap.add_argument("--poll", type=float, default=0.02)
    ap.add_argument("--backoff", type=float, default=0.05)
    ap.add_argument("--grace", type=float, default=5.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    engine = create_engine(args.url)
    queue = JobQueue(engine)
    log_file = Path(args.log).open("a", buffering=1)  # noqa: SIM115 - lives as long as the process
    pid = os.getpid()
    handlers = HandlerRegistry()

    def kill_self() -> None:
        os.kill(pid, signal.SIGKILL)

    def write_effect(job: Job) -> None:
        with write(engine) as conn:
            queue.assert_lease(conn, job)
            ins = (postgresql.insert if is_postgres(conn) else sqlite.insert)(effects)
            conn.execute(
                ins.values(job_id=job.id, token=job.token, pid=pid).on_conflict_do_nothing()
            )

    @handlers.handler("effect")
    async def effect(job: Job) -> None:
        start = time.monotonic()
        first = job.attempts == 1
        crash = job.payload.get("crash") if first else None
        if job.payload.get("poison"):
            raise ValueError("poison pill: cannot use access_token=canary-7f3a for this")
        if crash == "stop_before_effect":
            os.kill(pid, signal.SIGSTOP)
            log_file.write(f"resumed {job.id} {job.token} {pid}\n")
        if job.payload.get("sleep"):
            await asyncio.sleep(float(job.payload["sleep"]))
        await asyncio.to_thread(write_effect, job)
        if crash == "after_effect":
            kill_self()
        log_file.write(
            f"run {job.id} {job.token} {pid} {start:.6f} {time.monotonic():.6f} "
            f"{job.serial_key or '-'}\n"
        )

    def observer(event: str, job: Job) -> None:
        crash = job.payload.get("crash") if job.attempts == 1 else None
        if (event, crash) in {("claimed", "after_claim"), ("finished", "before_ack")}:
            kill_self()

    worker = Worker(
        queue,
        handlers,
        concurrency=args.concurrency,
        lease=args.lease,
        poll_interval=args.poll,
        grace=args.grace,
        backoff=lambda attempt: args.backoff,
        observer=observer,
        schedule_interval=None,
    )

    async def run() -> None:
        worker.handle_signals()
        await worker.run()

    try:
        asyncio.run(run())
    finally:
        engine.dispose()
        log_file.close()


if __name__ == "__main__":
    main()
