"""Validating a call's arguments against its tool's JSON Schema, with an error the model can act on.

``jsonschema``'s Draft 2020-12 validator does the checking: ``true`` is not an integer, ``0``, ``""`` and
``false`` are checked like any other value, enums and required properties are enforced. Validators are
compiled once per distinct schema. Patterns are matched under a time budget (``toolbox.safe_schema``): a
value that a pattern cannot be matched against in time is refused with an error that says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jsonschema.exceptions import ValidationError

from toolbox.protocol import ToolCall, ToolError, ToolSpec
from toolbox.safe_schema import UncheckableError, problems

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
    try:
        found_problems = sorted(problems(found.parameters, call.arguments), key=_order)
    except UncheckableError as exc:
        return ToolError(
            type="invalid_arguments",
            message=f"the arguments for {call.name!r} could not be checked: {exc}. Call {call.name!r} "
            "again with arguments that match its parameters schema.",
        )
    if not found_problems:
        return None
    lines = [_describe(problem) for problem in found_problems[:_MAX_REPORTED]]
    if len(found_problems) > _MAX_REPORTED:
        lines.append(f"... and {len(found_problems) - _MAX_REPORTED} more")
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


def _order(error: ValidationError) -> tuple[str, ...]:
    return tuple(str(part) for part in error.absolute_path)


def _describe(error: ValidationError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    return f"at '{where}': {message}" if where else message
