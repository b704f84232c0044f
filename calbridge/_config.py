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
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigurationError
from .models import Secret
from .provider import ProviderSettings
from .router import EmailDomainRule, PercentCohort, PreferWhenAuthorized, Rule, TenantRule

__all__ = ["BridgeConfig", "RoutingConfig"]


def _opt_secret(value: str | Secret | None) -> Secret | None:
    return value if value is None or isinstance(value, Secret) else Secret(value)


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """Policy rules, in evaluation order, for users who are not pinned and not under
    migration (no phase on their routing row; see
    :attr:`calbridge.router.UserFacts.under_migration`). For a user under migration the
    phase decides and these rules are not consulted: ``prefer_when_authorized`` (on by
    default) sends a user to the target as soon as they authorise it only while no
    ``calbridge migrate`` step has touched them.
    """

    prefer_when_authorized: bool = True
    tenants: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    email_domains: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    percent: float = 0.0
    cohort_salt: str = "calbridge"
    ttl: float = 5.0

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

    database_url: str | None = None
    keys: Secret | None = attrs.field(default=None, converter=_opt_secret)
    public_url: str | None = None
    target_provider: str = "cronofy"
    providers: Mapping[str, ProviderSettings] = attrs.field(factory=dict, hash=False)
    routing: RoutingConfig = attrs.field(factory=RoutingConfig)
    #: how often a full reconciliation read runs per calendar (seconds; default weekly)
    reconcile_interval: float = 7 * 24 * 3600.0
    #: how often polled calendars are read (seconds)
    poll_interval: float = 300.0
    #: how long webhook inbox rows are kept (seconds; default a week): the inbox is how a
    #: provider's redelivery is recognised (Cronofy retries for 24 hours), and the work a
    #: notification asks for is in the job committed with its row, so older rows go
    inbox_retention: float = 7 * 24 * 3600.0
    #: the connect flow's callback prefix; provider ``p`` redirects to ``{redirect_base}/p``
    redirect_base: str = "http://127.0.0.1:8000/calbridge/oauth"

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
        """Build from parsed TOML (``[calbridge]`` and ``[providers.*]`` tables)."""
        core = dict(data.get("calbridge", {}))
        routing = RoutingConfig(**core.pop("routing", {}))
        providers: dict[str, ProviderSettings] = {}
        for name, table in dict(data.get("providers", {})).items():
            raw = dict(table)
            secret_env = raw.pop("client_secret_env", None)
            if "client_secret" in raw:
                raise ConfigurationError(
                    f"[providers.{name}] client_secret must not be written in a file; "
                    "set client_secret_env to the name of an environment variable"
                )
            secret = os.environ.get(secret_env) if secret_env else None
            if secret_env and secret is None:
                raise ConfigurationError(
                    f"[providers.{name}] client_secret_env names {secret_env}, which is not set"
                )
            providers[name] = ProviderSettings(
                client_id=str(raw.pop("client_id", "")),
                client_secret=secret,
                base_urls=dict(raw.pop("base_urls", {})),
                options=dict(raw.pop("options", {})),
            )
            if raw:
                raise ConfigurationError(f"[providers.{name}] unknown keys: {sorted(raw)}")
        try:
            base = cls(routing=routing, providers=providers, **core)
        except TypeError as exc:
            raise ConfigurationError(f"[calbridge] {exc}") from None
        env = cls.from_env()
        return attrs.evolve(
            base,
            database_url=env.database_url or base.database_url,
            public_url=env.public_url or base.public_url,
            keys=env.keys or base.keys,
        )
