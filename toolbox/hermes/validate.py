"""Validating a call's arguments against its tool's JSON Schema, with an error the model can act on.

``jsonschema``'s Draft 2020-12 validator does the checking: ``true`` is not an integer, ``0``, ``""`` and
``false`` are checked like any other value, enums and required properties are enforced. Validators are
compiled once per distinct schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from toolbox.protocol import ToolCall, ToolError, ToolSpec

_MAX_REPORTED = 8

Specs = ToolSpec | Mapping[str, ToolSpec] | Iterable[ToolSpec]


def validate(call: ToolCall, spec: Specs) -> ToolError | None:
    """``None`` when ``call`` may run; otherwise a ``ToolError`` naming the call and what to change.

    ``spec`` is the tool's spec, or all offered specs (by name or as a list), so that a call to a tool
    that was not offered is reported as ``unknown_tool``.
    """
    specs = _by_name(spec)
    found = specs.get(call.name)
    if found is None:
        offered = ", ".join(sorted(specs)) or "none"
        return ToolError(
            type="unknown_tool",
            message=f"there is no tool named {call.name!r}; call one of the offered tools: {offered}",
        )
    problems = sorted(
        _validator(json.dumps(found.parameters, sort_keys=True)).iter_errors(call.arguments), key=_order
    )
    if not problems:
        return None
    lines = [_describe(problem) for problem in problems[:_MAX_REPORTED]]
    if len(problems) > _MAX_REPORTED:
        lines.append(f"... and {len(problems) - _MAX_REPORTED} more")
    return ToolError(
        type="invalid_arguments",
        message=f"invalid arguments for {call.name!r}: "
        + "; ".join(lines)
        + f". Call {call.name!r} again with arguments that match its parameters schema.",
    )


def _by_name(spec: Specs) -> Mapping[str, ToolSpec]:
    if isinstance(spec, ToolSpec):
        return {spec.name: spec}
    if isinstance(spec, Mapping):
        return spec
    return {one.name: one for one in spec}


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def _order(error: ValidationError) -> tuple[str, ...]:
    return tuple(str(part) for part in error.absolute_path)


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return f"at '{where}': {message}" if where else message
