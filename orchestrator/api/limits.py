"""A cap on request bodies: a declared ``Content-Length`` over the cap is refused before any of the body is
read; a body without one (chunked) is read up to the cap here, and refused as soon as it passes it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.errors import envelope


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app, self._max = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await envelope(400, "bad_content_length", "Content-Length is not a number")(
                    scope, receive, send
                )
            elif int(declared) > self._max:
                await self._refuse(scope, receive, send)
            else:
                await self._app(scope, receive, send)
            return
        # No declared length: read the body here (it is at most the cap), then hand it on unchanged.
        messages = await self._read(receive)
        if messages is None:
            await self._refuse(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self._app(scope, replay, send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self._max:
                return None
            if message["type"] != "http.request" or not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request bodies are limited to {self._max} bytes"
        await envelope(413, "body_too_large", message)(scope, receive, send)
