"""WebDAV / CalDAV on the wire: Basic-authorised requests, the error mapping, XML bodies
and multistatus answers.

Every request is sent by the provider toolkit's :class:`calbridge.toolkit.AuthorizedClient`
(its ``send``: :func:`calbridge.send`'s retries, ``Retry-After``, the provider's circuit
breaker and the shared rate budget, its retry rules), and failures are mapped by
:func:`error_for`, a toolkit :class:`~calbridge.toolkit.ErrorMapper`. The authorisation is
CalDAV's own: HTTP Basic from the session's credentials (the toolkit's ``request`` sends
bearer tokens and JSON bodies only). A 401 makes the session re-check its credentials once
(:meth:`calbridge.Session.refresh`: for CalDAV the provider's ``refresh_tokens`` asks the
server whether the app password still works) and the request is sent again; a second 401
is :class:`~calbridge.errors.ReauthRequired`.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit

import attrs
import httpx

import calbridge
from calbridge import Session, TokenSet
from calbridge.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderResponseError,
    RateLimited,
    ReauthRequired,
    SyncCursorExpired,
    Unavailable,
)
from calbridge.toolkit import AuthorizedClient

__all__ = [
    "CALDAV",
    "DAV",
    "ICAL",
    "DavClient",
    "DavResponse",
    "basic_authorization",
    "error_for",
    "multistatus",
    "xml_body",
]

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
ICAL = "http://apple.com/ns/ical/"
CS = "http://calendarserver.org/ns/"
_PREFIXES = {"d": DAV, "c": CALDAV, "i": ICAL, "cs": CS}
_XML = "application/xml; charset=utf-8"
#: an answer body larger than this is refused (a calendar-query of a whole year fits)
MAX_BODY = 64 * 1024 * 1024


def basic_authorization(tokens: TokenSet) -> str:
    """``Basic base64(username:password)``: the user name travels in ``tokens.extra``."""
    username = tokens.extra.get("username", "")
    raw = f"{username}:{tokens.access_token.reveal()}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def xml_body(root: str, inner: str) -> bytes:
    """A request body: ``<root>`` with the usual namespace prefixes (d, c, i, cs) declared."""
    declared = " ".join(f'xmlns:{p}="{ns}"' for p, ns in _PREFIXES.items())
    return f'<?xml version="1.0" encoding="utf-8"?><{root} {declared}>{inner}</{root}>'.encode()


@attrs.frozen
class DavResponse:
    """One ``<response>`` of a multistatus: its href and the properties found (200)."""

    href: str
    status: int | None
    props: Mapping[str, ET.Element]

    def text(self, name: str) -> str | None:
        """The text of a found property (``{namespace}local``), stripped."""
        element = self.props.get(name)
        if element is None:
            return None
        return (element.text or "").strip()


def _parse(body: bytes, what: str) -> ET.Element:
    # ElementTree never fetches external entities and expat caps entity expansion
    # (billion laughs); DOCTYPEs are refused outright, as a DAV server never sends one
    if b"<!DOCTYPE" in body[:2048].upper():
        raise ProviderResponseError(f"{what}: a DOCTYPE in the answer", provider="caldav")
    try:
        return ET.fromstring(body)  # noqa: S314 - see above
    except ET.ParseError as exc:
        raise ProviderResponseError(f"{what}: not XML ({exc})", provider="caldav") from None


def _status(text: str | None) -> int | None:
    parts = (text or "").split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def multistatus(body: bytes, *, what: str) -> Iterator[DavResponse]:
    """The ``<response>`` elements of a 207 answer (hrefs percent-decoded)."""
    root = _parse(body, what)
    if root.tag != f"{{{DAV}}}multistatus":
        raise ProviderResponseError(f"{what}: expected a multistatus", provider="caldav")
    for response in root.findall(f"{{{DAV}}}response"):
        href = response.findtext(f"{{{DAV}}}href")
        if not href:
            continue
        props: dict[str, ET.Element] = {}
        for propstat in response.findall(f"{{{DAV}}}propstat"):
            if _status(propstat.findtext(f"{{{DAV}}}status")) != 200:
                continue
            for prop in propstat.findall(f"{{{DAV}}}prop"):
                for element in prop:
                    props[element.tag] = element
        yield DavResponse(
            href=unquote(urlsplit(href.strip()).path),
            status=_status(response.findtext(f"{{{DAV}}}status")),
            props=props,
        )


def sync_token_of(body: bytes, *, what: str) -> str | None:
    """The ``<sync-token>`` at the end of a sync-collection answer."""
    return _parse(body, what).findtext(f"{{{DAV}}}sync-token")


def _precondition(response: httpx.Response) -> str:
    """The local name of the DAV precondition an error answer names (``""`` when none)."""
    if "xml" not in response.headers.get("content-type", "") or not response.content:
        return ""
    try:
        root = _parse(response.content, "error")
    except ProviderResponseError:
        return ""
    first = next(iter(root), None)
    return "" if first is None else first.tag.rsplit("}", 1)[-1]


def error_for(response: httpx.Response, *, what: str) -> ProviderError:
    """A DAV error answer as calbridge's error (never with credentials or a query)."""
    status = response.status_code
    condition = _precondition(response)
    if condition == "valid-sync-token":
        return SyncCursorExpired(f"{what}: the sync token is no longer valid", provider="caldav")
    if status == 401:
        return ReauthRequired(f"{what}: the server refused the credentials", provider="caldav")
    if status == 403:
        message = f"{what}: forbidden {condition}".strip()
        return InvalidRequest(message, provider="caldav", status=403)
    if status in (404, 410):
        return NotFound(f"{what}: not found", provider="caldav", status=status)
    if status == 412:
        return Conflict(f"{what}: the ETag no longer matches", provider="caldav", status=412)
    if status == 409:
        return Conflict(f"{what}: conflict {condition}".strip(), provider="caldav", status=409)
    if status == 429:
        retry = calbridge.parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(what, provider="caldav", retry_after=retry)
    if status >= 500:
        return Unavailable(f"{what}: server error", provider="caldav", status=status)
    return InvalidRequest(f"{what}: refused {condition}".strip(), provider="caldav", status=status)


class DavClient:
    """Sends a provider's DAV requests with a session's Basic credentials."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        provider: str,
        default_server: str | None,
        policy: calbridge.RetryPolicy | None = None,
    ) -> None:
        self.http = http
        self.provider = provider
        self.default_server = default_server
        self.api = AuthorizedClient(
            http=http,
            provider=provider,
            errors=error_for,
            policy=policy or calbridge.RetryPolicy(),
        )

    def server(self, tokens: TokenSet) -> str:
        """The account's server URL: its own (``tokens.extra["server"]``), else the default."""
        url = tokens.extra.get("server") or self.default_server
        if not url:
            raise calbridge.errors.ConfigurationError(
                "no CalDAV server: set [providers.caldav] base_urls.api or connect the "
                "account with a server URL"
            )
        return url if url.endswith("/") else url + "/"

    async def url(self, session: Session, href: str) -> str:
        """An absolute URL for a server path (or an absolute URL, returned as it is)."""
        return urljoin(self.server(await session.access_token()), href)

    async def request(
        self,
        session: Session,
        method: str,
        href: str,
        *,
        what: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        depth: str | None = None,
        accept: frozenset[int] = frozenset(),
        content_type: str = _XML,
    ) -> httpx.Response:
        """Send one request; an answer of 400 or more (not in ``accept``) is raised mapped."""
        tokens = await session.access_token()
        url = urljoin(self.server(tokens), href)
        for attempt in (1, 2):
            send_headers = {"Authorization": basic_authorization(tokens), **(headers or {})}
            if depth is not None:
                send_headers["Depth"] = depth
            if body is not None:
                send_headers["Content-Type"] = content_type
            request = self.http.build_request(method, url, content=body, headers=send_headers)
            response = await self.api.send(request, idempotent=method != "POST")
            if response.status_code == 401 and attempt == 1:
                tokens = await session.refresh(tokens)
                continue
            break
        if len(response.content) > MAX_BODY:
            raise ProviderResponseError(f"{what}: the answer is too large", provider=self.provider)
        if response.status_code >= 400 and response.status_code not in accept:
            raise self.api.errors(response, what=what)
        return response
