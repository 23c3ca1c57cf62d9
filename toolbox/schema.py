"""Tool specs from typed Python functions and their Google-style docstrings.

``tool_spec(fn)`` reads the signature for types and defaults and the docstring for the summary and one
description per parameter, as in the Hermes model cards' ``get_current_temperature`` example. A trailing
``(choices: [...])`` in a parameter's description becomes a JSON Schema ``enum``. A parameter without a
description, a documented parameter that does not exist, or a parameter without a type is refused with a
``SchemaError`` that names it: a tool the model cannot understand is a tool it will misuse.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError
from pydantic import PydanticSchemaGenerationError, TypeAdapter

from toolbox.errors import SchemaError
from toolbox.protocol import ToolSpec
from toolbox.safe_schema import check_bounds

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns|Return|Yields|Raises|Examples?|Notes?|Note):\s*$"
)
_ARG_LINE = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(?:\((?P<type>[^)]*)\))?\s*:\s*(?P<text>.*)$")
_CHOICES = re.compile(r"\(choices:\s*(?P<list>.*?)\)\s*$", re.IGNORECASE | re.DOTALL)
_PRIMITIVES = {"string", "integer", "number", "boolean", "null"}


@dataclass(frozen=True)
class Docstring:
    summary: str
    params: dict[str, str]
    returns: str


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into its summary, ``Args:`` entries and ``Returns:`` text."""
    lines = inspect.cleandoc(doc or "").splitlines()
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in lines:
        match = _SECTION.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if match:
            current = match.group(1).lower()
            sections.setdefault(current, [])
        else:
            sections[current].append(line)
    arg_lines = sections.get("args") or sections.get("arguments") or sections.get("parameters") or []
    returns = sections.get("returns") or sections.get("return") or []
    return Docstring(
        summary="\n".join(sections[""]).strip(),
        params=_parse_args(arg_lines),
        returns=" ".join(line.strip() for line in returns).strip(),
    )


def _parse_args(lines: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    indent: int | None = None
    name = ""
    for line in lines:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        match = _ARG_LINE.match(line.strip())
        if depth <= indent and match:
            name = match.group("name")
            entries[name] = [match.group("text").strip()]
        elif name:
            entries[name].append(line.strip())
    return {key: " ".join(part for part in parts if part) for key, parts in entries.items()}


def tool_spec(fn: Callable[..., Any], *, name: str | None = None) -> ToolSpec:
    """Describe ``fn`` as a tool. Raises ``SchemaError`` naming what is missing or unsupported."""
    tool_name: str = name or str(getattr(fn, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", tool_name):
        raise SchemaError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    doc = parse_docstring(inspect.getdoc(fn))
    if not doc.summary:
        raise SchemaError(f"tool {tool_name!r} has no docstring summary; describe what it does")
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise SchemaError(f"tool {tool_name!r}: cannot resolve its type hints: {exc}") from exc
    _check_documented(tool_name, signature, doc)
    parameters = _parameters(tool_name, signature, hints, doc)
    returns = _returns(hints, doc)
    spec = ToolSpec(name=tool_name, description=doc.summary, parameters=parameters, returns=returns)
    check_schema(spec)
    return spec


def check_schema(spec: ToolSpec) -> None:
    """Refuse a spec whose parameters are not a valid JSON Schema object, or are larger or deeper than
    ``toolbox.safe_schema`` accepts, or hold a pattern that cannot be compiled."""
    if spec.parameters.get("type") != "object":
        raise SchemaError(f"tool {spec.name!r}: parameters must be a JSON Schema with type 'object'")
    check_bounds(spec.parameters, f"tool {spec.name!r}: the parameters schema")
    try:
        Draft202012Validator.check_schema(spec.parameters)
    except JsonSchemaError as exc:
        raise SchemaError(f"tool {spec.name!r}: invalid parameters schema: {exc.message}") from exc


def _check_documented(tool: str, signature: inspect.Signature, doc: Docstring) -> None:
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SchemaError(
                f"tool {tool!r}: *{param.name} cannot be offered to a model; name each argument"
            )
        if param.name not in doc.params:
            raise SchemaError(
                f"tool {tool!r}: parameter {param.name!r} is not documented; add "
                f"'{param.name}: <what it is>' under 'Args:' in the docstring"
            )
    stale = sorted(set(doc.params) - set(signature.parameters))
    if stale:
        raise SchemaError(f"tool {tool!r}: the docstring documents parameters that do not exist: {stale}")


def _parameters(
    tool: str, signature: inspect.Signature, hints: dict[str, Any], doc: Docstring
) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    defs: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.name not in hints:
            raise SchemaError(f"tool {tool!r}: parameter {param.name!r} has no type annotation")
        schema = type_schema(hints[param.name], defs, where=f"tool {tool!r}, parameter {param.name!r}")
        description, choices = _split_choices(doc.params[param.name])
        if choices is not None:
            schema["enum"] = choices
        if description:
            schema["description"] = description
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif _json_able(param.default):
            schema["default"] = param.default
        properties[param.name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if defs:
        result["$defs"] = defs
    return result


def _returns(hints: dict[str, Any], doc: Docstring) -> dict[str, Any] | None:
    annotation = hints.get("return")
    if annotation is None or annotation is type(None):
        return None
    try:
        schema = type_schema(annotation, {}, where="return value")
    except SchemaError:
        schema = {}
    if doc.returns:
        schema["description"] = doc.returns
    return schema


def type_schema(annotation: Any, defs: dict[str, Any], *, where: str) -> dict[str, Any]:
    """JSON Schema for a Python type, with nested model definitions hoisted into ``defs``."""
    try:
        schema = TypeAdapter(annotation).json_schema(ref_template="#/$defs/{model}")
    except (PydanticSchemaGenerationError, TypeError, ValueError) as exc:
        raise SchemaError(f"{where}: type {annotation!r} cannot be described as JSON Schema") from exc
    defs.update(schema.pop("$defs", {}))
    return _simplify(schema)


def _simplify(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf`` of plain types (``Optional[str]``) becomes a compact ``type`` list."""
    options = schema.get("anyOf")
    if isinstance(options, list) and all(set(o) == {"type"} and o["type"] in _PRIMITIVES for o in options):
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return {"type": [o["type"] for o in options], **rest}
    return schema


def _split_choices(text: str) -> tuple[str, list[Any] | None]:
    match = _CHOICES.search(text)
    if not match:
        return text, None
    raw = match.group("list")
    try:
        choices = json.loads(raw)
    except ValueError:
        try:
            choices = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise SchemaError(f"cannot read the choices list {raw!r}; write it as a JSON list") from exc
    if not isinstance(choices, list | tuple) or not choices:
        raise SchemaError(f"choices must be a non-empty list, not {raw!r}")
    return text[: match.start()].strip(), list(choices)


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
