"""Cronofy's data centres and the two hosts of each: the API host and the app (OAuth) host.

An account lives in one data centre, and every call for it (and its channels) goes there.
``ProviderSettings.base_urls`` overrides the hosts, e.g. for the sandbox, which serves both
under one prefix: ``{"api": "http://127.0.0.1:8800/cronofy", "app": "http://127.0.0.1:8800/cronofy"}``.
When only one of the two is given, it serves as both.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from calbridge.errors import ConfigurationError

__all__ = ["DATA_CENTERS", "Hosts", "hosts_for"]

#: data-centre id -> (API host, app host)
DATA_CENTERS: Mapping[str, tuple[str, str]] = {
    "us": ("https://api.cronofy.com", "https://app.cronofy.com"),
    "uk": ("https://api-uk.cronofy.com", "https://app-uk.cronofy.com"),
    "de": ("https://api-de.cronofy.com", "https://app-de.cronofy.com"),
    "au": ("https://api-au.cronofy.com", "https://app-au.cronofy.com"),
    "ca": ("https://api-ca.cronofy.com", "https://app-ca.cronofy.com"),
    "sg": ("https://api-sg.cronofy.com", "https://app-sg.cronofy.com"),
}


@attrs.frozen
class Hosts:
    """Base URLs without a trailing slash."""

    api: str
    app: str


def hosts_for(data_center: str | None, base_urls: Mapping[str, str]) -> Hosts:
    """The hosts for a data centre (``us`` when None), or the configured base URLs."""
    api = base_urls.get("api")
    app = base_urls.get("app")
    if api or app:
        api = api or app
        app = app or api
        assert api is not None
        assert app is not None
        return Hosts(api=api.rstrip("/"), app=app.rstrip("/"))
    dc = (data_center or "us").lower()
    if dc not in DATA_CENTERS:
        raise ConfigurationError(
            f"unknown Cronofy data centre {data_center!r}; use one of "
            f"{', '.join(DATA_CENTERS)} or set base_urls"
        )
    api, app = DATA_CENTERS[dc]
    return Hosts(api=api, app=app)
