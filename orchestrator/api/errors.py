"""The API's one error envelope, ``{"error": {"type", "code", "message"}}``, and the handlers that turn
every failure into it: a client never sees a stack trace or a raw validation dump.

``ApiError`` (under ``OrchestratorError``) is raised by the routes for what the client got wrong or may
retry; validation errors name the field; the store failing (a ``StoreError``) is a 503; anything else is a
bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from orchestrator.errors import OrchestratorError, StoreError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "run_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(OrchestratorError):
    """A failure reported to the client with ``status`` and a stable ``code``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.param = param


def envelope(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
) -> JSONResponse:
    """The error body; ``param`` (the request's field at fault) as OpenAI's errors name it."""
    error = {"type": _TYPES.get(status, "api_error"), "code": code, "message": message}
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"no {what} {ident!r}")


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "limits", "max_steps") -> "limits.max_steps"; the "body" prefix tells the client nothing.
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or "body"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return envelope(exc.status, exc.code, exc.message, exc.headers, param=exc.param)


#: The routes in OpenAI's shape answer a request they cannot read with a 400 naming the field, as OpenAI does
#: (its clients raise ``BadRequestError``); the native API's answer is a 422.
OPENAI_PATHS = ("/v1/chat/", "/v1/responses", "/v1/models")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    if first.get("type") == "json_invalid":
        return envelope(400, "invalid_json", "the request body is not valid JSON")
    if tuple(first.get("loc", ())) == ("body",) and not _json_content(request):
        # FastAPI reads a body as JSON only when it says it is (curl -d sends a form's content type).
        return envelope(
            400, "invalid_json", "send the request body as JSON, with Content-Type: application/json"
        )
    field = _field(tuple(first.get("loc", ())))
    if not request.url.path.startswith(OPENAI_PATHS):
        return envelope(422, "validation_error", f"{field}: {first.get('msg', 'invalid')}")
    if first.get("type") == "extra_forbidden":
        return envelope(400, "unknown_field", f"{field}: unknown field (not part of this API)", param=field)
    return envelope(400, "invalid_request", f"{field}: {first.get('msg', 'invalid')}", param=field)


def _json_content(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return envelope(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: store unavailable: %s", request.method, request.url.path, exc)
    return envelope(
        503, "store_unavailable", "the run store is unavailable; retry later", {"Retry-After": "1"}
    )


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return envelope(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(StoreError, _unavailable)  # what a store raises when it fails
    app.add_exception_handler(Exception, _internal)
