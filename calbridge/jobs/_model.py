"""Job values, the signals a handler may raise, and secret-free error text."""

from __future__ import annotations

import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import attrs

from ..errors import CalbridgeError

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_QUEUE",
    "Clock",
    "Handler",
    "Job",
    "LeaseLost",
    "RetryLater",
    "describe_error",
]

#: the queue a job goes to when none is named
DEFAULT_QUEUE: Final = "default"
#: claims before a failing job is dead-lettered
DEFAULT_MAX_ATTEMPTS: Final = 10
#: longest error text kept on a job row
MAX_ERROR_CHARS: Final = 4000

#: a clock in epoch seconds (``time.time``; tests inject a fake one)
Clock: TypeAlias = Callable[[], float]


@attrs.frozen(kw_only=True, eq=False)
class Job:
    """One job as read from the queue (what a handler receives).

    Attributes:
        id: the job's row id.
        kind: which handler runs it.
        queue: the queue it is in (workers listen to a set of queues).
        payload: the secret-free JSON object given at enqueue time.
        state: ``queued``, ``running``, ``done``, ``dead`` or ``merged``.
        attempts: claims so far, this one included.
        max_attempts: claims allowed before a failing job goes dead.
        token: the fencing token of this claim. Every write made on the job's behalf
            must present it (:meth:`JobQueue.assert_lease`); a worker whose lease
            expired holds a stale token and changes nothing.
        run_at: epoch seconds at which it became (or becomes) runnable.
        coalesce_key: at most one queued job per key.
        serial_key: at most one running job per key.
        priority: lower runs first.
        lease_expires_at: epoch seconds when the current lease ends (None unless running).
        last_error: the last failure's scrubbed text.
    """

    id: int
    kind: str
    queue: str
    payload: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    token: int
    run_at: float
    coalesce_key: str | None = None
    serial_key: str | None = None
    priority: int = 0
    lease_expires_at: float | None = None
    last_error: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Job {self.id} {self.kind!r} {self.state} attempt {self.attempts}/"
            f"{self.max_attempts} token {self.token}>"
        )


#: an async job handler
Handler: TypeAlias = Callable[[Job], Awaitable[object]]


class RetryLater(CalbridgeError):
    """Raised by a handler: run this job again after ``delay`` seconds.

    The claim is given back (it does not count towards ``max_attempts``). Handlers may
    also let :class:`calbridge.errors.RateLimited` or :class:`~calbridge.errors.Unavailable`
    with a ``retry_after`` escape: the worker treats them the same way.
    """

    def __init__(self, delay: float, reason: str = "retry later") -> None:
        self.delay = max(0.0, float(delay))
        self.reason = reason
        super().__init__(f"{reason}; retry in {self.delay:g} s")


class LeaseLost(CalbridgeError):
    """The job's lease passed to another worker; this worker's result is discarded."""

    def __init__(self, job_id: int, token: int) -> None:
        self.job_id = job_id
        self.token = token
        super().__init__(
            f"job {job_id} lost its lease (fencing token {token} is stale); "
            "another worker owns it now, so nothing was written"
        )


_SCRUBBERS: Final = (
    # query strings may carry codes and tokens
    (re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>]*"), r"\1?***"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (
        re.compile(
            r"(?i)\b(access_token|refresh_token|id_token|client_secret|password|secret|"
            r"api_key|apikey|token|code)(\"?'?\s*[:=]\s*[\"']?)[^\s\"'&,}]+"
        ),
        r"\1\2***",
    ),
)


def scrub(text: str) -> str:
    """Blank out things that look like credentials (defence in depth; errors carry none)."""
    for pattern, repl in _SCRUBBERS:
        text = pattern.sub(repl, text)
    return text


def describe_error(exc: BaseException) -> str:
    """The traceback of ``exc`` (no local variables), scrubbed and truncated."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    text = scrub(text)
    if len(text) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        text = text[:half] + "\n[... truncated ...]\n" + text[-half:]
    return text
