"""A cap on request bodies, enforced while the body is read: a declared ``Content-Length`` over the cap is
refused before any of the body is read, and a chunked body is cut off as soon as it passes the cap."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.errors import ApiError, envelope


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app, self._max = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max):
            status, code = (413, "body_too_large") if declared.isdigit() else (400, "bad_content_length")
            await envelope(status, code, f"request bodies are limited to {self._max} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self._max:
                raise ApiError(413, "body_too_large", f"request bodies are limited to {self._max} bytes")
            return message

        await self._app(scope, counted, send)
