"""OpenTelemetry spans around what calbridge does on a request's behalf.

calbridge depends on ``opentelemetry-api`` only when it is installed (the ``otel`` extra);
without it, or without an SDK configured by the application, :func:`span` costs a
no-op context manager. The application configures the SDK and exporter (OTLP, console,
...) as it does for its own spans; calbridge's spans then appear under its tracer
``calbridge``, children of whatever span is current.

Spans name what was done and how it ended, never a secret nor the content of a calendar:
attributes are the provider, the operation, the outcome (``ok`` or ``error``) and, on an
error, its type (``error.type``, the exception's class name, never its message).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar, cast

from ._version import __version__

__all__ = ["SpanKind", "annotate", "span", "traced"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: attribute names calbridge's spans use
PROVIDER: Final = "calbridge.provider"
OPERATION: Final = "calbridge.operation"
OUTCOME: Final = "calbridge.outcome"

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised by the lowest-dependency job
    _trace = None  # type: ignore[assignment]


class SpanKind:
    """The span kinds calbridge uses (names of :class:`opentelemetry.trace.SpanKind`)."""

    INTERNAL: Final = "INTERNAL"
    CLIENT: Final = "CLIENT"
    SERVER: Final = "SERVER"
    CONSUMER: Final = "CONSUMER"


Attribute = str | int | float | bool


@contextlib.contextmanager
def span(
    name: str, *, kind: str = SpanKind.INTERNAL, **attributes: Attribute | None
) -> Iterator[Any]:
    """A span named ``name`` around the block, current while it runs.

    ``attributes`` whose value is None are left out. The span ends with
    ``calbridge.outcome`` ``ok``, or ``error`` plus ``error.type`` and an error status
    when the block raises (the exception propagates unchanged). Yields the span (or None
    without opentelemetry-api), on which the block may set more attributes.
    """
    if _trace is None:
        yield None
        return
    tracer = _trace.get_tracer("calbridge", __version__)
    clean = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(
        name,
        kind=getattr(_trace.SpanKind, kind),
        attributes=clean,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                current.set_attribute(OUTCOME, "error")
                current.set_attribute("error.type", type(exc).__name__)
                current.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
            raise
        if current.is_recording():
            current.set_attribute(OUTCOME, "ok")


def annotate(**attributes: Attribute | None) -> None:
    """Set attributes on the current span (if one is recording); None values are left out."""
    if _trace is None:
        return
    current = _trace.get_current_span()
    if current.is_recording():
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


def traced(operation: str) -> Callable[[F], F]:
    """Decorate an ``async def`` so each call is a span ``calbridge.<operation>`` with
    ``calbridge.operation``; the body may :func:`annotate` it (e.g. with the provider)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> Any:
            with span(f"calbridge.{operation}", **{OPERATION: operation}):
                return await fn(*args, **kwargs)

        return cast(F, run)

    return wrap
