"""A span for every API request under ``/v1/`` (``orchestrator.tracing``): a run submitted in one belongs to
its trace. Pure ASGI, so that a streamed response (SSE) is inside its request's span to its end."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.tracing import Tracing, record_status


class Traced:
    def __init__(self, app: ASGIApp, tracing: Tracing | None = None) -> None:
        self._app, self._tracing = app, tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith("/v1/"):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = str(scope["method"])
        with self._tracing.request(method, path, path, headers) as span:

            async def sent(message: Message) -> None:
                if message["type"] == "http.response.start":
                    record_status(span, int(message["status"]))
                await send(message)

            try:
                await self._app(scope, receive, sent)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:  # the route's template, not the path: span names stay few
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
