"""Plugin loading: a typed wrapper over pluggy's PluginManager.

Every plugin comes from the ``calbridge`` entry-point group: calbridge's own
``pyproject.toml`` registers the built-ins there (``DEFAULT_PLUGINS``, one entry each,
named by its dotted path), exactly as a third-party distribution registers its plugins.
Built-ins load first, in ``DEFAULT_PLUGINS`` order, and by dotted path when no entry point
is found (a host built with ``entry_points=False``, or a source tree that is not installed).
Nothing loads at import time.

Environment switches:

* ``CALBRIDGE_LOAD_PLUGINS=a,b`` loads only these entry-point plugins (built-ins always load)
* ``CALBRIDGE_DISABLE_PLUGINS=a,b`` blocks plugins by name (built-ins included)
* ``CALBRIDGE_TRACE_PLUGINS=1`` prints every hook call to stderr
* ``CALBRIDGE_STRICT_PLUGINS=1`` makes a broken plugin an error instead of a warning
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import re
import sys
import types
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError, ProviderConflictError, ProviderNotFoundError
from .hookspecs import ChangeSource, SandboxFactory
from .provider import Provider

__all__ = ["DEFAULT_PLUGINS", "PluginHost", "ProviderInfo", "get_plugin_host"]

log = logging.getLogger("calbridge.plugins")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "calbridge_cronofy",
    "calbridge_cronofy.sandbox",
    "calbridge_google",
    "calbridge_google.sandbox",
    "calbridge_outlook",
    "calbridge_outlook.sandbox",
    "calbridge_polling",
    "calbridge_caldav",
)

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class PluginLoadWarning(UserWarning):
    """A third-party plugin failed to load and was skipped."""


@attrs.frozen(kw_only=True)
class ProviderInfo:
    """A registered provider and where it came from."""

    name: str
    cls: type[Provider]
    plugin: str
    #: ``"built-in"`` or the distribution name (and version) that registered it
    source: str
    aliases: tuple[str, ...] = ()


def _own_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """calbridge's own entries in the ``calbridge`` group (the built-ins), by name."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        dist = ep.dist
        if dist is not None and dist.name == "calbridge":
            found[ep.name] = ep
    return found


def _env_list(name: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, "").split(",") if p.strip()]


@attrs.define
class PluginHost:
    """Owns one pluggy manager and the provider registry built from it.

    Use :func:`get_plugin_host` for the process-wide one, or build a fresh one in tests
    (``PluginHost(entry_points=False, strict=True)``).
    """

    entry_points: bool = True
    strict: bool = attrs.field(
        factory=lambda: os.environ.get("CALBRIDGE_STRICT_PLUGINS", "") not in ("", "0")
    )
    builtins: Sequence[str] = DEFAULT_PLUGINS
    pm: pluggy.PluginManager = attrs.field(init=False)
    #: plugins that failed to load: name -> secret-free reason
    failures: dict[str, str] = attrs.field(init=False, factory=dict)
    _sources: dict[str, str] = attrs.field(init=False, factory=dict)
    _providers: dict[str, ProviderInfo] | None = attrs.field(init=False, default=None)
    _loaded: bool = attrs.field(init=False, default=False)
    _aliases: dict[str, str] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for name in _env_list("CALBRIDGE_DISABLE_PLUGINS"):
            self.pm.set_blocked(name)
        if os.environ.get("CALBRIDGE_TRACE_PLUGINS", "") not in ("", "0"):
            self.pm.trace.root.setwriter(sys.stderr.write)
            self.pm.enable_tracing()

    # -- loading ---------------------------------------------------------------------

    def load(self) -> PluginHost:
        """Register built-ins and entry-point plugins (once)."""
        if self._loaded:
            return self
        self._loaded = True
        own = _own_entry_points() if self.entry_points else {}
        for dotted in self.builtins:
            if self.pm.is_blocked(dotted):
                continue
            ep = own.get(dotted)
            module = ep.load() if ep is not None else importlib.import_module(dotted)
            self.register(module, name=dotted, source="built-in")
        if self.entry_points:
            self._load_entry_points()
        return self

    def _load_entry_points(self) -> None:
        allow = _env_list("CALBRIDGE_LOAD_PLUGINS")
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if allow and ep.name not in allow:
                continue
            if self.pm.is_blocked(ep.name) or self.pm.has_plugin(ep.name):
                continue
            dist = ep.dist
            source = f"{dist.name} {dist.version}" if dist is not None else ep.value
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name, source=source)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self.failures[ep.name] = reason
                if self.strict:
                    raise PluginError(
                        f"plugin {ep.name!r} from {source} failed to load: {reason}",
                        plugin=ep.name,
                    ) from exc
                warnings.warn(
                    f"calbridge plugin {ep.name!r} from {source} failed to load and was "
                    f"skipped: {reason}",
                    PluginLoadWarning,
                    stacklevel=2,
                )

    def register(self, plugin: object, *, name: str | None = None, source: str = "") -> str:
        """Register a plugin object (module or instance); returns its name."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:  # blocked
            return name or ""
        self._sources[registered] = source or "registered in code"
        self._providers = None
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin by name."""
        self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._providers = None

    # -- typed hook facade -----------------------------------------------------------

    def providers(self) -> Mapping[str, ProviderInfo]:
        """Every registered provider by name (aliases not included)."""
        return types.MappingProxyType(self._registry()[0])

    def provider_names(self) -> frozenset[str]:
        """Every name a provider answers to: registered names and their aliases (what
        :meth:`calbridge.BridgeConfig.check_providers` checks a configuration against)."""
        infos, aliases = self._registry()
        return frozenset(infos) | frozenset(aliases)

    def _registry(self) -> tuple[dict[str, ProviderInfo], dict[str, str]]:
        self.load()
        if self._providers is not None:
            return self._providers, self._aliases
        infos: dict[str, ProviderInfo] = {}
        owners: dict[str, str] = {}  # name or alias -> plugin
        alias_map: dict[str, str] = {}
        # call each implementation on its own so the registrar knows which plugin speaks
        for impl in reversed(self.pm.hook.register_providers.get_hookimpls()):
            plugin_name = impl.plugin_name

            def register(
                provider_cls: type[Provider],
                *,
                aliases: Sequence[str] = (),
                _plugin: str = plugin_name,
            ) -> None:
                if isinstance(aliases, str):
                    aliases = (aliases,)
                self._add(infos, owners, alias_map, provider_cls, tuple(aliases), _plugin)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin_name!r} failed in register_providers: "
                    f"{type(exc).__name__}: {exc}",
                    plugin=plugin_name,
                ) from exc
        self._providers, self._aliases = infos, alias_map
        return infos, alias_map

    def _add(  # noqa: PLR0917 - private helper
        self,
        infos: dict[str, ProviderInfo],
        owners: dict[str, str],
        aliases: dict[str, str],
        provider_cls: type[Provider],
        given: tuple[str, ...],
        plugin: str,
    ) -> None:
        if not (isinstance(provider_cls, type) and issubclass(provider_cls, Provider)):
            raise PluginError(
                f"plugin {plugin!r} registered {provider_cls!r}, which is not a "
                "calbridge.Provider subclass",
                plugin=plugin,
            )
        name = getattr(provider_cls, "name", None)
        for label in (name, *given):
            if not isinstance(label, str) or not _NAME_RE.match(label):
                raise PluginError(
                    f"plugin {plugin!r} registered provider name {label!r}: names are "
                    "lower-case letters, digits and underscores, starting with a letter",
                    plugin=plugin,
                )
            if label in owners:
                raise ProviderConflictError(label, [owners[label], plugin])
            owners[label] = plugin
        assert isinstance(name, str)
        for alias in given:
            aliases[alias] = name
        infos[name] = ProviderInfo(
            name=name,
            cls=provider_cls,
            plugin=plugin,
            source=self._sources.get(plugin, "registered in code"),
            aliases=given,
        )

    def provider_class(self, name: str) -> type[Provider]:
        """The provider class registered as ``name`` (or one of its aliases)."""
        infos, aliases = self._registry()
        real = aliases.get(name, name)
        if real not in infos:
            raise ProviderNotFoundError(name, list(infos))
        return infos[real].cls

    def sandbox_factories(self) -> Mapping[str, SandboxFactory]:
        """Every registered provider sandbox: provider name -> factory (see
        :func:`calbridge.hookspecs.register_sandboxes`)."""
        self.load()
        factories: dict[str, SandboxFactory] = {}
        owners: dict[str, str] = {}
        for impl in reversed(self.pm.hook.register_sandboxes.get_hookimpls()):
            plugin_name = impl.plugin_name

            def register(
                provider: str, factory: SandboxFactory, _plugin: str = plugin_name
            ) -> None:
                if not isinstance(provider, str) or not _NAME_RE.match(provider):
                    raise PluginError(
                        f"plugin {_plugin!r} registered sandbox name {provider!r}: names are "
                        "lower-case letters, digits and underscores, starting with a letter",
                        plugin=_plugin,
                    )
                if not callable(factory):
                    raise PluginError(
                        f"plugin {_plugin!r} registered a sandbox factory that is not callable",
                        plugin=_plugin,
                    )
                if provider in owners:
                    raise ProviderConflictError(provider, [owners[provider], _plugin])
                owners[provider] = _plugin
                factories[provider] = factory

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin_name!r} failed in register_sandboxes: "
                    f"{type(exc).__name__}: {exc}",
                    plugin=plugin_name,
                ) from exc
        return types.MappingProxyType(factories)

    def make_change_source(self, provider: Provider, callback_url: str | None) -> ChangeSource:
        """How ``provider``'s changes are observed (first plugin answer wins)."""
        self.load()
        answer: ChangeSource | None = self.pm.hook.make_change_source(
            provider=provider, callback_url=callback_url
        )
        if answer is None:
            raise PluginError(
                f"no plugin decided how to observe changes of {provider.name!r}; "
                "is calbridge_polling blocked?"
            )
        return answer

    def notify_account_status_changed(self, account: Any, old_status: Any, reason: str) -> None:
        """Fire :func:`calbridge.hookspecs.account_status_changed`."""
        self.load()
        self.pm.hook.account_status_changed(account=account, old_status=old_status, reason=reason)

    def plugin_names(self) -> Iterable[str]:
        """Names of registered plugins."""
        self.load()
        return [n for n, _ in self.pm.list_name_plugin()]


@functools.cache
def get_plugin_host() -> PluginHost:
    """The process-wide plugin host (loaded lazily on first use)."""
    return PluginHost()
