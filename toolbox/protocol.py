"""The vocabulary every Caduceus package speaks.

Plain frozen dataclasses, each with a ``kind`` tag, and one pydantic ``TypeAdapter`` (``RECORD``)
that reads and writes any of them as JSON. Messages carry their ChatML role as their ``kind``.

- ``SystemMessage``, ``UserMessage``: text turns (untrusted text; it is neutralized when rendered).
- ``AssistantMessage``: a model turn. ``raw`` holds the model's exact output; when present it is
  replayed byte for byte, which keeps prompts append-only.
- ``ToolMessage``: the results of one assistant turn's calls, rendered as one ``tool`` turn.
- ``ToolCall``: a call the model asked for; ``arguments`` is always a JSON object.
- ``ToolResult``: what a call returned: ``content`` (any JSON value) or a ``ToolError`` the model can
  act on. Errors that are our fault are exceptions, never results.
- ``ToolSpec``: a tool's name, description and JSON Schema parameters (and, optionally, its return).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import Field, TypeAdapter

ToolErrorType: TypeAlias = Literal[
    "unknown_tool",
    "invalid_arguments",
    "malformed_call",
    "tool_error",
    "timeout",
    "out_of_memory",
    "crashed",
    "output_truncated",
    "denied",
    "cancelled",
]


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for. ``id`` is unique within its run."""

    id: str
    name: str
    arguments: dict[str, Any]
    kind: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True)
class ToolError:
    """An error the model can act on: what went wrong with a call and what to change."""

    type: ToolErrorType
    message: str
    kind: Literal["tool_error"] = "tool_error"


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one call: a JSON-able ``content``, or an ``error``."""

    call_id: str
    name: str
    content: Any = None
    error: ToolError | None = None
    kind: Literal["tool_result"] = "tool_result"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ToolSpec:
    """A tool as offered to the model. ``parameters`` is a JSON Schema of type object."""

    name: str
    description: str
    parameters: dict[str, Any]
    returns: dict[str, Any] | None = None
    kind: Literal["tool_spec"] = "tool_spec"

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tools-API form: ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class SystemMessage:
    content: str
    kind: Literal["system"] = "system"

    @property
    def role(self) -> str:
        return self.kind


@dataclass(frozen=True)
class UserMessage:
    content: str
    kind: Literal["user"] = "user"

    @property
    def role(self) -> str:
        return self.kind


@dataclass(frozen=True)
class AssistantMessage:
    """A model turn. ``raw`` is the model's exact output (without the closing ``<|im_end|>``)."""

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    raw: str | None = None
    reasoning: str = ""
    kind: Literal["assistant"] = "assistant"

    @property
    def role(self) -> str:
        return self.kind


@dataclass(frozen=True)
class ToolMessage:
    """The results of one assistant turn's calls, in call order: one ``tool`` turn."""

    results: tuple[ToolResult, ...]
    kind: Literal["tool"] = "tool"

    @property
    def role(self) -> str:
        return self.kind


Message: TypeAlias = SystemMessage | UserMessage | AssistantMessage | ToolMessage

Record: TypeAlias = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | ToolCall | ToolResult | ToolSpec,
    Field(discriminator="kind"),
]

#: The one JSON adapter: ``RECORD.dump_json(obj)`` and ``RECORD.validate_json(data)`` for any record.
RECORD: TypeAdapter[Record] = TypeAdapter(Record)


def to_json(record: Record) -> bytes:
    """Serialize any record to compact JSON bytes (non-ASCII kept)."""
    return RECORD.dump_json(record)


def from_json(data: str | bytes) -> Record:
    """Read a record written by :func:`to_json`; raises ``pydantic.ValidationError`` on bad input."""
    return RECORD.validate_json(data)


def dumps(value: Any) -> str:
    """One-line JSON the way the Hermes format writes it: ``", "``/``": "`` separators, non-ASCII kept.

    Values that JSON cannot hold (NaN, infinities) are written as strings rather than as invalid JSON.
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
