"""Enterprise Connect: service-account authorization and delegated account access.

1. ``GET /enterprise_connect/oauth/authorize`` (admin, auto-consented) → 302 with a code.
2. ``POST /oauth/token`` → a service-account token (``expires_in`` 1800,
   ``service_account_id``).
3. ``POST /v1/service_account_authorizations`` (single or batch) → 202; a moment later the
   sandbox POSTs ``{"authorization": {"code", "state"}}`` (signed like notifications) to each
   ``callback_url``.
4. That code is exchanged at ``/oauth/token`` with the callback URL as ``redirect_uri``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import attrs
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from calbridge.sandbox import Grant

from ._state import SERVICE_ACCOUNT, new_id
from ._wire import FieldError

if TYPE_CHECKING:
    from ._engine import CronofyEngine

__all__ = ["EnterpriseConnect", "ServiceAccount"]

_SA_SCOPES = (
    "service_account/accounts/manage",
    "service_account/accounts/unrestricted_access",
    "service_account/resources/manage",
    "service_account/resources/unrestricted_access",
)


@attrs.define(kw_only=True)
class ServiceAccount:
    """An Enterprise Connect service account for one domain."""

    service_account_id: str
    domain: str
    admin_email: str
    delegated_scope: str


class EnterpriseConnect:
    """Service accounts of one Cronofy engine."""

    def __init__(self, engine: CronofyEngine) -> None:
        self.engine = engine
        self.accounts: dict[str, ServiceAccount] = {}

    async def authorize(self, request: Request) -> Response:
        """The admin's authorization (auto-consented) → 302 to ``redirect_uri`` with a code."""
        q = request.query_params
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if self.engine.world.application_secret(client_id) is None or not redirect_uri:
            return PlainTextResponse("unknown client_id or missing redirect_uri", 400)
        sep = "&" if "?" in redirect_uri else "?"
        state = {"state": q["state"]} if "state" in q else {}
        scope = q.get("scope", "")
        if q.get("response_type") != "code":
            error = "unsupported_response_type"
        elif not set(scope.split()) & set(_SA_SCOPES):
            error = "invalid_scope"
        else:
            error = ""
        if error:
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode({'error': error, **state})}")
        admin = (q.get("login_hint") or "admin@sandbox.example").lower()
        account = ServiceAccount(
            service_account_id=new_id("ser_"),
            domain=admin.split("@")[-1],
            admin_email=admin,
            delegated_scope=q.get("delegated_scope", "read_write"),
        )
        self.accounts[account.service_account_id] = account
        code = self.engine.issue_code(
            client_id, redirect_uri, account.service_account_id, scope, kind=SERVICE_ACCOUNT
        )
        return RedirectResponse(f"{redirect_uri}{sep}{urlencode({'code': code, **state})}", 302)

    def userinfo(self, grant: Grant) -> dict[str, Any]:
        """Userinfo of a service-account token."""
        account = self.accounts[grant.subject]
        return {
            "sub": account.service_account_id,
            "cronofy.type": "service_account",
            "cronofy.service_account.domain": account.domain,
        }

    def request_access(self, grant: Grant, body: dict[str, Any]) -> None:
        """Queue delegated-access requests; raises :class:`FieldError` (422)."""
        if "service_account/accounts/manage" not in grant.scope.split():
            raise FieldError("scope", "errors.insufficient_scope", "accounts/manage required")
        entries = body.get("service_account_authorizations")
        items = entries if isinstance(entries, list) else [body]
        for item in items:
            for field in ("email", "callback_url", "scope"):
                if not item.get(field):
                    raise FieldError(field, "errors.required", "required")
        for item in items:
            self._schedule(grant, dict(item))

    def _schedule(self, grant: Grant, item: dict[str, Any]) -> None:
        def run() -> None:
            self._grant(grant, item)

        self.engine.world.clock.call_later(
            self.engine.settings.write_delay, run, name="enterprise connect"
        )

    def _grant(self, grant: Grant, item: dict[str, Any]) -> None:
        email = str(item["email"]).lower()
        account = self.accounts[grant.subject]
        payload: dict[str, Any]
        if email.split("@")[-1] != account.domain:
            payload = {
                "error": "access_denied",
                "error_key": "not_in_domain",
                "error_description": f"{email} is not in {account.domain}",
            }
        else:
            user = self.engine.account_for(email)
            code = self.engine.issue_code(
                grant.client_id, str(item["callback_url"]), user.sub, str(item["scope"])
            )
            payload = {"code": code}
        if item.get("state") is not None:
            payload["state"] = item["state"]
        body = json.dumps({"authorization": payload}, separators=(",", ":")).encode()
        self.engine.world.delivery.deliver(
            "cronofy",
            str(item["callback_url"]),
            body,
            {
                "Content-Type": "application/json; charset=utf-8",
                "Cronofy-HMAC-SHA256": self.engine.sign(grant.client_id, body),
            },
        )
