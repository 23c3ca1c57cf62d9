"""The ``http_get`` tool: fetch a URL whose host is on the operator's allow-list (off by default).

The allow-list comes from the tool's configuration (through the tool context), never from the model.
Redirects are followed only to allowed hosts, and the body is read up to the output budget.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from toolbox.tools import context

_TIMEOUT = 10.0


def _allowed(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    allowed = context.current().egress
    host = parts.hostname.lower()
    if host not in allowed:
        listed = ", ".join(allowed) or "none"
        raise context.DeniedError(f"host {host!r} is not on this tool's allow-list (allowed: {listed})")
    return url


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 (urllib fixes this signature)
        self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        return super().redirect_request(req, fp, code, msg, headers, _allowed(newurl))


def http_get(url: str) -> dict[str, Any]:
    """Fetch a web page or API response with HTTP GET.

    Args:
        url: The http or https URL to fetch; its host must be on the allow-list.
    Returns:
        The status code, content type and body text.
    """
    opener = urllib.request.build_opener(_Redirects)
    limit = context.current().output_bytes // 2
    try:
        with opener.open(_allowed(url), timeout=_TIMEOUT) as response:
            body = response.read(limit + 1)
            status, kind = response.status, response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        body, status, kind = exc.read(limit + 1), exc.code, exc.headers.get("content-type", "")
    result = {"status": status, "content_type": kind, "body": body[:limit].decode("utf-8", errors="replace")}
    if len(body) > limit:
        raise context.OutputTruncatedError(f"the response is longer than {limit} bytes", result)
    return result
