"""Bridge configuration: in code, from a TOML file, or from the environment.

A file (``calbridge.toml``)::

    [calbridge]
    database_url = "sqlite:///./calbridge.db"
    public_url = "https://app.example.com/calbridge/hooks"  # webhook base; omit to poll
    target_provider = "cronofy"

    [calbridge.routing]
    prefer_when_authorized = true
    percent = 10                      # deterministic cohort sent to the target
    tenants = { acme = "cronofy" }
    email_domains = { "example.com" = "cronofy" }

    [providers.cronofy]
    client_id = "..."
    client_secret_env = "CRONOFY_CLIENT_SECRET"   # secrets come from the environment
    base_urls = { api = "http://127.0.0.1:8800/cronofy", app = "http://127.0.0.1:8800/cronofy" }
    options = { data_centre = "uk" }

Environment overrides: ``CALBRIDGE_DATABASE_URL``, ``CALBRIDGE_PUBLIC_URL``,
``CALBRIDGE_KEYS`` (the token vault keys), and per provider
``CALBRIDGE_<NAME>_CLIENT_ID`` / ``CALBRIDGE_<NAME>_CLIENT_SECRET``.

Validation is strict: an unknown key or table, a value of the wrong type and an unknown
time zone raise :class:`~calbridge.errors.ConfigurationError` naming the field and, where
one is near, the valid name meant. Provider names are checked against the loaded plugins
by :meth:`BridgeConfig.check_providers` when a bridge opens. Every key is listed in
``docs/configuration.md``.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import tomllib
import zoneinfo
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigurationError
from .models import Secret
from .provider import ProviderSettings
from .router import EmailDomainRule, PercentCohort, PreferWhenAuthorized, Rule, TenantRule

__all__ = ["BridgeConfig", "RoutingConfig", "check_time_zone", "did_you_mean"]

#: provider option keys that name a time zone (checked against the IANA database)
TIME_ZONE_OPTIONS = frozenset({"default_time_zone", "default_tzid", "time_zone", "tzid"})
_PROVIDER_KEYS = ("client_id", "client_secret_env", "base_urls", "options")
_TABLES = ("calbridge", "providers")


def _env_keys() -> Secret | None:
    """``$CALBRIDGE_KEYS`` (the default of :attr:`BridgeConfig.keys`), None when unset."""
    value = os.environ.get("CALBRIDGE_KEYS", "").strip()
    return Secret(value) if value else None


def _opt_secret(value: str | Secret | None) -> Secret | None:
    return value if value is None or isinstance(value, Secret) else Secret(value)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice nearest ``name``, or an empty string."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not near:
        lowered = {c.lower(): c for c in choices}
        near = [lowered[name.lower()]] if name.lower() in lowered else []
    return f" (did you mean {near[0]!r}?)" if near else ""


def _unknown_keys(
    where: str, given: Iterable[str], allowed: Collection[str], noun: str = "key"
) -> None:
    for key in given:
        if key not in allowed:
            raise ConfigurationError(
                f"{where} unknown {noun} {key!r}{did_you_mean(key, allowed)}; "
                f"valid {noun}s: {', '.join(sorted(allowed))}"
            )


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(field: str, value: object) -> str:
    """Return ``value`` if it is an IANA time zone name; else raise ConfigurationError
    naming ``field`` and the nearest zone."""
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{field} must be an IANA time zone name such as 'Europe/Paris', "
            f"not {value!r} ({type(value).__name__})"
        )
    if value not in _zone_names():
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"{field} = {value!r} is not an IANA time zone{did_you_mean(value, _zone_names())}"
            ) from None
    return value


def _type_error(field: str, value: object, wanted: str) -> ConfigurationError:
    return ConfigurationError(f"{field} must be {wanted}, not {value!r} ({type(value).__name__})")


def _seconds(inst: object, attribute: attrs.Attribute[float], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value <= 0
    ):
        raise _type_error(attribute.name, value, "a positive number of seconds (e.g. 300)")


def _is(kind: type, wanted: str, *, optional: bool = False) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if optional and value is None:
            return
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _type_error(attribute.name, value, wanted)

    return check


def _names_map(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _type_error(attribute.name, value, "a table of names to provider names")


def _providers(inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping):
        raise _type_error("providers", value, "a table of provider name to settings")
    for name, settings in value.items():
        if not isinstance(settings, ProviderSettings):
            raise _type_error(f"providers[{name!r}]", settings, "a ProviderSettings")
        _check_settings(f"[providers.{name}]", settings)


def _check_settings(where: str, settings: ProviderSettings) -> None:
    if not isinstance(settings.client_id, str):
        raise _type_error(f"{where} client_id", settings.client_id, "a string")
    if not isinstance(settings.base_urls, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in settings.base_urls.items()
    ):
        raise _type_error(f"{where} base_urls", settings.base_urls, "a table of URLs")
    if not isinstance(settings.options, Mapping):
        raise _type_error(f"{where} options", settings.options, "a table")
    for key, option in settings.options.items():
        if key in TIME_ZONE_OPTIONS:
            check_time_zone(f"{where} options.{key}", option)


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """Policy rules, in evaluation order, for users who are not pinned and not under
    migration (no phase on their routing row; see
    :attr:`calbridge.router.UserFacts.under_migration`). For a user under migration the
    phase decides and these rules are not consulted: ``prefer_when_authorized`` (on by
    default) sends a user to the target as soon as they authorise it only while no
    ``calbridge migrate`` step has touched them.
    """

    prefer_when_authorized: bool = attrs.field(default=True, validator=_is(bool, "true or false"))
    tenants: Mapping[str, str] = attrs.field(factory=dict, hash=False, validator=_names_map)
    email_domains: Mapping[str, str] = attrs.field(factory=dict, hash=False, validator=_names_map)
    #: percentage (0-100) of users sent to the target provider, by a stable hash
    percent: float = attrs.field(default=0.0)
    cohort_salt: str = attrs.field(default="calbridge", validator=_is(str, "a string"))
    #: seconds a routing decision is cached
    ttl: float = attrs.field(default=5.0)

    @percent.validator
    def _percent(self, attribute: attrs.Attribute[float], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise _type_error("percent", value, "a number from 0 to 100")

    @ttl.validator
    def _ttl(self, attribute: attrs.Attribute[float], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise _type_error("ttl", value, "a number of seconds, 0 or more")

    def rules(self) -> list[Rule]:
        """The rules in evaluation order."""
        out: list[Rule] = []
        if self.prefer_when_authorized:
            out.append(PreferWhenAuthorized())
        if self.tenants:
            out.append(TenantRule(self.tenants))
        if self.email_domains:
            out.append(EmailDomainRule(self.email_domains))
        if self.percent:
            out.append(PercentCohort(self.percent, salt=self.cohort_salt))
        return out


@attrs.frozen(kw_only=True)
class BridgeConfig:
    """Everything a :class:`calbridge.CalBridge` needs.

    Attributes:
        database_url: ``sqlite:///path`` (default ``./calbridge.db``) or
            ``postgresql+psycopg://...``.
        keys: the vault key spec (``kid:base64key,...``, current first); defaults to
            ``CALBRIDGE_KEYS``.
        public_url: the public base URL of the webhook receiver; each provider's callback
            is ``{public_url}/{provider}``. None means no push: changes are polled.
        target_provider: the provider users migrate to.
        providers: settings per provider name.
    """

    database_url: str | None = attrs.field(
        default=None, validator=_is(str, "a database URL string", optional=True)
    )
    keys: Secret | None = attrs.field(factory=_env_keys, converter=_opt_secret)
    public_url: str | None = attrs.field(
        default=None, validator=_is(str, "a URL string", optional=True)
    )
    target_provider: str = attrs.field(default="cronofy", validator=_is(str, "a provider name"))
    providers: Mapping[str, ProviderSettings] = attrs.field(
        factory=dict, hash=False, validator=_providers
    )
    routing: RoutingConfig = attrs.field(
        factory=RoutingConfig, validator=_is(RoutingConfig, "a RoutingConfig")
    )
    #: how often a full reconciliation read runs per calendar (seconds; default weekly)
    reconcile_interval: float = attrs.field(default=7 * 24 * 3600.0, validator=_seconds)
    #: how often polled calendars are read (seconds)
    poll_interval: float = attrs.field(default=300.0, validator=_seconds)
    #: how long webhook inbox rows are kept (seconds; default a week): the inbox is how a
    #: provider's redelivery is recognised (Cronofy retries for 24 hours), and the work a
    #: notification asks for is in the job committed with its row, so older rows go
    inbox_retention: float = attrs.field(default=7 * 24 * 3600.0, validator=_seconds)
    #: the connect flow's callback prefix; provider ``p`` redirects to ``{redirect_base}/p``
    redirect_base: str = attrs.field(
        default="http://127.0.0.1:8000/calbridge/oauth", validator=_is(str, "a URL string")
    )

    def check_providers(self, known: Collection[str]) -> None:
        """Raise :class:`~calbridge.errors.ConfigurationError` when a provider name in the
        configuration (a ``[providers.*]`` table, ``target_provider``, a routing rule's
        value) is not in ``known`` (the loaded providers' names and aliases), naming the
        nearest loaded one. A host with no providers at all has nothing to check against.
        """
        if not known:
            return
        loaded = (
            f" Loaded providers: {', '.join(sorted(known))}; install the plugin or fix the name."
        )
        for name in self.providers:
            if name not in known:
                raise ConfigurationError(
                    f"[providers.{name}] names no loaded provider{did_you_mean(name, known)}."
                    + loaded
                )
        named = [("target_provider", self.target_provider)]
        named += [(f"routing.tenants[{k!r}]", v) for k, v in self.routing.tenants.items()]
        named += [
            (f"routing.email_domains[{k!r}]", v) for k, v in self.routing.email_domains.items()
        ]
        for field, name in named:
            if name not in known:
                raise ConfigurationError(
                    f"{field} = {name!r} names no loaded provider{did_you_mean(name, known)}."
                    + loaded
                )

    def callback_url(self, provider: str) -> str | None:
        """The webhook URL for ``provider``, or None when push is not configured."""
        if not self.public_url:
            return None
        return f"{self.public_url.rstrip('/')}/{provider}"

    def settings_for(self, provider: str) -> ProviderSettings:
        """The provider's settings, with environment overrides applied."""
        base = self.providers.get(provider, ProviderSettings())
        prefix = f"CALBRIDGE_{provider.upper()}_"
        client_id = os.environ.get(prefix + "CLIENT_ID") or base.client_id
        secret = os.environ.get(prefix + "CLIENT_SECRET")
        return attrs.evolve(
            base,
            client_id=client_id,
            client_secret=Secret(secret) if secret else base.client_secret,
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> BridgeConfig:
        """Configuration from ``CALBRIDGE_*`` environment variables (plus ``overrides``)."""
        values: dict[str, Any] = {
            "database_url": os.environ.get("CALBRIDGE_DATABASE_URL"),
            "public_url": os.environ.get("CALBRIDGE_PUBLIC_URL"),
            "keys": os.environ.get("CALBRIDGE_KEYS"),
        }
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_file(cls, path: str | Path) -> BridgeConfig:
        """Read a TOML file (see the module docstring); the environment still overrides."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> BridgeConfig:
        """Build from parsed TOML (``[calbridge]`` and ``[providers.*]`` tables).

        Unknown tables and keys, values of the wrong type and unknown time zones raise
        :class:`~calbridge.errors.ConfigurationError` naming the field and the nearest
        valid name.
        """
        _unknown_keys("config file:", data, _TABLES, noun="table")
        core = dict(_table("[calbridge]", data.get("calbridge", {})))
        fields = [f.name for f in attrs.fields(cls) if f.name != "providers"]
        _unknown_keys("[calbridge]", core, fields)
        routing_table = dict(_table("[calbridge.routing]", core.pop("routing", {})))
        _unknown_keys("[calbridge.routing]", routing_table, attrs.fields_dict(RoutingConfig))
        try:
            routing = RoutingConfig(**routing_table)
        except ConfigurationError as exc:
            raise ConfigurationError(f"[calbridge.routing] {exc}") from None
        providers: dict[str, ProviderSettings] = {}
        for name, table in _table("[providers]", data.get("providers", {})).items():
            where = f"[providers.{name}]"
            raw = dict(_table(where, table))
            if "client_secret" in raw:
                raise ConfigurationError(
                    f"{where} client_secret must not be written in a file; "
                    "set client_secret_env to the name of an environment variable"
                )
            _unknown_keys(where, raw, _PROVIDER_KEYS)
            secret_env = raw.get("client_secret_env")
            if secret_env is not None and not isinstance(secret_env, str):
                raise _type_error(f"{where} client_secret_env", secret_env, "a variable name")
            secret = os.environ.get(secret_env) if secret_env else None
            if secret_env and secret is None:
                raise ConfigurationError(
                    f"{where} client_secret_env names {secret_env}, which is not set"
                )
            client_id = raw.get("client_id", "")
            if not isinstance(client_id, str):
                raise _type_error(f"{where} client_id", client_id, "a string")
            providers[name] = ProviderSettings(
                client_id=client_id,
                client_secret=secret,
                base_urls=dict(_table(f"{where} base_urls", raw.get("base_urls", {}))),
                options=dict(_table(f"{where} options", raw.get("options", {}))),
            )
        try:
            base = cls(routing=routing, providers=providers, **core)
        except ConfigurationError as exc:
            message = str(exc)
            raise ConfigurationError(
                message if message.startswith("[") else f"[calbridge] {message}"
            ) from None
        env = cls.from_env()
        return attrs.evolve(
            base,
            database_url=env.database_url or base.database_url,
            public_url=env.public_url or base.public_url,
            keys=env.keys or base.keys,
        )


def _table(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _type_error(where, value, "a table")
    return value
