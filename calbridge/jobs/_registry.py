"""Job kinds and their handlers: :class:`HandlerRegistry` and the loader behind
``calbridge worker --handlers``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from ..errors import ConfigurationError
from ._model import Handler
from ._queue import JobQueue

__all__ = ["BUILTIN_HANDLERS", "HandlerRegistry", "load_handlers"]


class HandlerRegistry:
    """Job kinds and their async handlers.

    Example::

        handlers = HandlerRegistry()

        @handlers.handler("sync")
        async def sync(job: Job) -> None: ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for kind, fn in (handlers or {}).items():
            self.add(kind, fn)

    def __repr__(self) -> str:
        return f"<HandlerRegistry kinds={sorted(self._handlers)}>"

    def add(self, kind: str, fn: Handler) -> None:
        """Register ``fn`` for ``kind``; a kind has one handler."""
        if not kind or len(kind) > 128:
            raise ValueError("a job kind is a non-empty name of at most 128 characters")
        if kind in self._handlers and self._handlers[kind] is not fn:
            raise ValueError(f"job kind {kind!r} already has a handler")
        self._handlers[kind] = fn

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(fn: Handler) -> Handler:
            self.add(kind, fn)
            return fn

        return deco

    def update(self, other: HandlerRegistry) -> None:
        """Add every handler of ``other``."""
        for kind, fn in other.items():
            self.add(kind, fn)

    def items(self) -> Iterator[tuple[str, Handler]]:
        return iter(sorted(self._handlers.items()))

    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def __getitem__(self, kind: str) -> Handler:
        return self._handlers[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers


#: ``module:attribute`` of the HandlerRegistry objects every ``calbridge worker`` loads.
#: calbridge packages that define job kinds (sync, channel renewal) add theirs here.
BUILTIN_HANDLERS: list[str] = []


def load_handlers(
    paths: Iterable[str], *, queue: JobQueue | None = None, builtins: bool = True
) -> HandlerRegistry:
    """One registry merged from ``module:attribute`` paths.

    Each attribute is a :class:`HandlerRegistry`, or a callable that takes the
    :class:`JobQueue` (``queue``) and returns one (handlers that need the store).

    Raises:
        ConfigurationError: a path is malformed, cannot be imported or gives no registry.
    """
    registry = HandlerRegistry()
    for path in [*(BUILTIN_HANDLERS if builtins else ()), *paths]:
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ConfigurationError(f"handlers must be given as module:attribute, not {path!r}")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"cannot load job handlers {path!r}: {exc}") from None
        if not isinstance(obj, HandlerRegistry) and callable(obj) and queue is not None:
            obj = obj(queue)
        if not isinstance(obj, HandlerRegistry):
            raise ConfigurationError(
                f"{path!r} is neither a calbridge.jobs.HandlerRegistry nor a callable "
                "that takes the JobQueue and returns one"
            )
        registry.update(obj)
    return registry
