"""The provider toolkit: what every provider plugin needs to call its API and its OAuth server.

A provider builds one :class:`AuthorizedClient` and one :class:`OAuthClient` on the shared
client calbridge passes in, and writes only what is its own: the URLs, an
:class:`ErrorMapper` for its error envelope, its wire models and their conversion::

    from calbridge.toolkit import AuthorizedClient, OAuthClient, TokenErrors

    class ExampleProvider(calbridge.Provider):
        def __init__(self, *, http, settings):
            super().__init__(http=http, settings=settings)
            self.api = AuthorizedClient(http=http, provider=self.name, errors=error_for)
            self.oauth = OAuthClient(
                client=self.api,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                authorize_url=f"{ACCOUNTS}/authorize",
                token_url=f"{ACCOUNTS}/token",
                errors=TokenErrors(provider=self.name, issuer="Example"),
            )

        async def list_calendars(self, session):
            data = await self.api.call_json(session, "GET", f"{API}/calendars", what="list")
            return [calendar_from_wire(item) for item in data["items"]]

* :class:`AuthorizedClient`: the account's bearer token, exactly one refresh on a 401
  and one retry, :func:`calbridge.send`'s retries, breaker and shared rate budget,
  client-side :class:`Limiter` paces, provider-specific :class:`RetryRule` s, a
  per-account concurrency cap, and failed answers raised through the provider's
  :class:`ErrorMapper`.
* :class:`OAuthClient`: the authorization URL (PKCE ``S256``, or ``plain`` where the
  provider takes it), the code exchange, the refresh and the revocation, with
  :class:`TokenErrors` (RFC 6749 §5.2) mapping refusals.
* :class:`WireStruct`: the base of the provider's wire models (msgspec structs), one set
  per API for reads and writes; :func:`decode_wire` reads JSON text or decoded JSON into
  them (unreadable input is a :class:`calbridge.errors.ProviderResponseError`),
  :func:`wire_dict` / :func:`encode_wire` write request bodies, ``None`` and default
  fields left out. :class:`calbridge.Secret` fields are read as secrets and written only
  with ``reveal_secrets=True``.

The guide is ``docs/plugins/writing-a-provider.md``.
"""

from __future__ import annotations

from ._client import (
    AuthorizedClient,
    ErrorMapper,
    Limiter,
    Params,
    RetryRule,
    describe,
    encode_params,
)
from ._oauth import (
    OAuthClient,
    PkceMethod,
    TokenAction,
    TokenAnswer,
    TokenErrorMapper,
    TokenErrors,
    TokenReader,
    oauth_error_code,
    pkce_challenge,
    read_token_set,
)
from ._wire import WireStruct, decode_wire, encode_wire, wire_dict

__all__ = [
    "AuthorizedClient",
    "ErrorMapper",
    "Limiter",
    "OAuthClient",
    "Params",
    "PkceMethod",
    "RetryRule",
    "TokenAction",
    "TokenAnswer",
    "TokenErrorMapper",
    "TokenErrors",
    "TokenReader",
    "WireStruct",
    "decode_wire",
    "describe",
    "encode_params",
    "encode_wire",
    "oauth_error_code",
    "pkce_challenge",
    "read_token_set",
    "wire_dict",
]
