"""The ``http_get`` tool: fetch a URL whose host is on the operator's allow-list (off by default).

The allow-list comes from the tool's configuration (through the tool context), never from the model.
Each entry is a host (a name or an address), ``host:port`` to allow that port instead of 80 and 443, or
a network (``10.0.0.0/8``) whose addresses the allowed names may resolve to.

Each request, and each redirect (at most five, each checked the same way):

- its host must be on the list and its port allowed for that host;
- a name is resolved once (``resolve``, which tests may replace), and an address is used only when it is
  public or in a listed network; an address the operator listed itself is used as it is;
- the connection goes to exactly that address, with the name in the ``Host`` header and as the TLS server
  name (so a name that resolves elsewhere a moment later, DNS rebinding, changes nothing).

The body is read up to the output budget.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

from toolbox.tools import context

_TIMEOUT = 10.0
_DEFAULT_PORTS = frozenset({80, 443})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _system_resolve(host: str, port: int) -> list[str]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


#: Name resolution: ``(host, port) -> addresses``. Replaced by tests, to control what a name resolves to.
resolve: Callable[[str, int], list[str]] = _system_resolve


class _Policy:
    """The allow-list, parsed: hosts with their ports, and networks."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.ports: dict[str, set[int]] = {}
        self.networks: list[_Network] = []
        for entry in entries:
            self._add(entry.strip().lower())

    def _add(self, entry: str) -> None:
        if "/" in entry:
            self.networks.append(ipaddress.ip_network(entry, strict=False))
            return
        parts = urllib.parse.urlsplit(f"//{entry}")
        host = parts.hostname or entry
        ports = {parts.port} if parts.port else set(_DEFAULT_PORTS)
        self.ports.setdefault(host, set()).update(ports)

    def target(self, url: str) -> tuple[urllib.parse.SplitResult, str, int]:
        """The URL's parts, its host and port, if the list allows them (``DeniedError`` if not)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        host = parts.hostname.lower()
        if host not in self.ports:
            listed = ", ".join(sorted(self.ports)) or "none"
            raise context.DeniedError(f"host {host!r} is not on this tool's allow-list (allowed: {listed})")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if port not in self.ports[host]:
            allowed = ", ".join(map(str, sorted(self.ports[host])))
            raise context.DeniedError(f"port {port} is not allowed for {host!r} (allowed: {allowed})")
        return parts, host, port

    def address(self, host: str, port: int) -> str:
        """The one address to connect to for ``host``: resolved once, checked, then used as it is."""
        if _literal(host) is not None:
            return host  # the operator listed this very address
        addresses = resolve(host, port)
        for candidate in addresses:
            parsed = _literal(candidate)
            if parsed is not None and (parsed.is_global or any(parsed in n for n in self.networks)):
                return candidate
        shown = ", ".join(addresses) or "nothing"
        raise context.DeniedError(
            f"host {host!r} resolves to {shown}: not a public address nor in an allowed network"
        )


def _literal(host: str) -> _Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _Pinned(http.client.HTTPConnection):
    """HTTP to ``address``, whatever the host name resolves to now; the name goes in ``Host``."""

    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=_TIMEOUT)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to ``address``; the name is the TLS server name (SNI) and what the certificate must match."""

    def __init__(self, host: str, port: int, address: str) -> None:
        import ssl  # noqa: PLC0415 (only https pays for it)

        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=_TIMEOUT, context=self.tls)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(raw, server_hostname=self.host)


def http_get(url: str) -> dict[str, Any]:
    """Fetch a web page or API response with HTTP GET.

    Args:
        url: The http or https URL to fetch; its host must be on the allow-list.
    Returns:
        The status code, content type and body text.
    """
    policy = _Policy(context.current().egress)
    limit = context.current().output_bytes // 2
    for _ in range(_MAX_REDIRECTS + 1):
        status, kind, body, location = _fetch(policy, url, limit)
        if status not in _REDIRECTS or not location:
            result = {"status": status, "content_type": kind, "body": body[:limit].decode("utf-8", "replace")}
            if len(body) > limit:
                raise context.OutputTruncatedError(f"the response is longer than {limit} bytes", result)
            return result
        url = urllib.parse.urljoin(url, location)
    raise ValueError(f"more than {_MAX_REDIRECTS} redirects")


def _fetch(policy: _Policy, url: str, limit: int) -> tuple[int, str, bytes, str | None]:
    parts, host, port = policy.target(url)
    address = policy.address(host, port)
    kind = _PinnedTLS if parts.scheme == "https" else _Pinned
    connection = kind(host, port, address)
    try:
        path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.request("GET", path, headers={"Accept-Encoding": "identity", "User-Agent": "caduceus"})
        response = connection.getresponse()
        body = response.read(limit + 1)
        return response.status, response.getheader("content-type", ""), body, response.getheader("location")
    finally:
        connection.close()
