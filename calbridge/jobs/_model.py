"""Job values, the signals a handler may raise, and secret-free error text.

:class:`Job` and :class:`LeaseLost` are the queue's rows and fencing as the store reads
them (:mod:`calbridge.store.jobs`); they are calbridge.jobs' names all the same.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from ..errors import CalbridgeError
from ..store.jobs import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, Job, LeaseLost

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

#: longest error text kept on a job row
MAX_ERROR_CHARS: Final = 4000

#: a clock in epoch seconds (``time.time``; tests inject a fake one)
Clock: TypeAlias = Callable[[], float]


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
