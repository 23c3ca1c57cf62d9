"""Decoding the body of one ``<tool_call>`` block into calls, or into errors the model can act on.

The body is JSON: one ``{"name": ..., "arguments": {...}}`` object (either key order), an array of them,
or several objects one after another. When it is not JSON, a Python literal (the single-quoted dicts the
model cards show) is accepted through ``ast.literal_eval``, never through a quote swap. NaN, infinities
and duplicate keys are refused: the model must say exactly one thing.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from toolbox.protocol import ToolCall

ParseErrorType: TypeAlias = Literal["truncated", "invalid_json", "not_a_call", "empty"]

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(?P<body>.*?)\n?\s*```$", re.DOTALL)
_LITERAL_LIMIT = 256 * 1024
_RAW_LIMIT = 500


@dataclass(frozen=True)
class ParseError:
    """One broken ``<tool_call>`` block: which one, what kind of fault, and what the model should change."""

    index: int
    type: ParseErrorType
    message: str
    raw: str


class _RefusedError(ValueError):
    """JSON that parses but that we refuse (NaN, duplicate keys)."""


def _refuse_constant(name: str) -> Any:
    raise _RefusedError(f"{name} is not valid JSON; use null, a number or a string")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RefusedError(f"the key {key!r} appears twice in one object; give each key once")
        result[key] = value
    return result


def _snippet(body: str) -> str:
    return body if len(body) <= _RAW_LIMIT else body[:_RAW_LIMIT] + "..."


def decode_block(body: str, index: int, *, truncated: bool) -> tuple[list[dict[str, Any]], list[ParseError]]:
    """The call objects in one block body (not yet numbered), and the errors for the parts that failed.

    ``truncated`` says the block never closed: a JSON error at the end of it is then reported as a
    truncated call rather than as invalid JSON.
    """
    text = body.strip()
    fence = _FENCE.match(text)
    if fence:
        text = fence.group("body").strip()
    if not text:
        kind: ParseErrorType = "truncated" if truncated else "empty"
        return [], [_error(index, kind, "the <tool_call> block is empty; put one JSON object in it", body)]
    try:
        values = _values(text)
    except _RefusedError as exc:
        return [], [_error(index, "invalid_json", str(exc), body)]
    except (ValueError, RecursionError) as exc:
        return [], [_invalid(index, text, body, exc, truncated=truncated)]
    objects: list[dict[str, Any]] = []
    errors: list[ParseError] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            obj, problem = _call_object(item)
            if obj is not None:
                objects.append(obj)
            else:
                errors.append(_error(index, "not_a_call", problem, body))
    return objects, errors


def _values(text: str) -> list[Any]:
    """JSON values in ``text``: one, or several separated by whitespace or commas; else a Python literal."""
    decoder = json.JSONDecoder(
        object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant, strict=False
    )
    try:
        return [decoder.decode(text)]
    except json.JSONDecodeError as first:
        if first.msg != "Extra data":
            return [_literal(text, first)]
        values, pos = [], 0
        while pos < len(text):
            value, pos = decoder.raw_decode(text, pos)
            values.append(value)
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
        return values


def _literal(text: str, json_error: json.JSONDecodeError) -> Any:
    if len(text) > _LITERAL_LIMIT or not text.startswith(("{", "[")):
        raise json_error
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise json_error from None
    return _as_json(value, json_error)


def _as_json(value: Any, json_error: json.JSONDecodeError) -> Any:
    """A Python literal as JSON data; anything JSON cannot say (sets, bytes, NaN) is refused."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise json_error
        return {key: _as_json(item, json_error) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(item, json_error) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise _RefusedError("NaN and infinities are not valid JSON; use null, a number or a string")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise json_error


def _call_object(item: Any) -> tuple[dict[str, Any] | None, str]:
    """``{"name", "arguments"}`` from one decoded item, or why it is not a call."""
    if not isinstance(item, dict):
        return None, f"expected a JSON object with 'name' and 'arguments', got {type(item).__name__}"
    if "name" not in item and isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, "the call has no 'name'; give the tool's name as a string"
    arguments = item.get("arguments", item.get("parameters", {}))
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None, f"'arguments' of {name!r} is a string that is not JSON; give a JSON object"
    if not isinstance(arguments, dict):
        return None, f"'arguments' of {name!r} must be a JSON object, not {type(arguments).__name__}"
    return {"name": name.strip(), "arguments": arguments}, ""


def _invalid(index: int, text: str, body: str, exc: Exception, *, truncated: bool) -> ParseError:
    if isinstance(exc, RecursionError):
        return _error(index, "invalid_json", "the JSON is nested too deeply; flatten the arguments", body)
    if isinstance(exc, json.JSONDecodeError):
        at_end = exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated string")
        if truncated and at_end:
            message = "the tool call was cut off before its JSON ended; send the whole call again"
            return _error(index, "truncated", message, body)
        where = f"line {exc.lineno} column {exc.colno}"
        return _error(index, "invalid_json", f"invalid JSON at {where}: {exc.msg}", body)
    return _error(index, "invalid_json", f"invalid JSON: {exc}", body)


def _error(index: int, kind: ParseErrorType, message: str, body: str) -> ParseError:
    return ParseError(index=index, type=kind, message=message, raw=_snippet(body))


def number_calls(objects: list[dict[str, Any]], prefix: str, start: int) -> list[ToolCall]:
    return [
        ToolCall(id=f"{prefix}{start + n}", name=obj["name"], arguments=obj["arguments"])
        for n, obj in enumerate(objects)
    ]
