"""Checking a JSON Schema that a client sends (a run's ``json_schema``, a tool's parameters, a response
format): bounded first (nesting and size, ``toolbox.safe_schema``), then valid as a JSON Schema."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from orchestrator.api.errors import ApiError
from toolbox.errors import SchemaError as BoundsError
from toolbox.safe_schema import check_bounds


def check_schema(schema: dict[str, Any] | None, param: str, *, status: int = 422) -> None:
    """Nothing for a schema that is fine (or none); else an ``ApiError`` (``status``) naming ``param``."""
    if schema is None:
        return
    try:
        check_bounds(schema, param)  # first: checking a schema nested without bound recurses so
    except BoundsError as exc:
        raise ApiError(status, _code(status), str(exc), param=param) from None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        message = f"{param}: not a valid JSON Schema: {exc.message}"
        raise ApiError(status, _code(status), message, param=param) from None


def _code(status: int) -> str:
    return "validation_error" if status == 422 else "invalid_request"
