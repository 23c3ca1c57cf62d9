"""What the parser reports: stream events as output arrives, and the whole turn at the end.

Events are built once per streamed chunk, so they are slotted dataclasses (cheap to create); treat
them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from toolbox.hermes.decode import ParseError
from toolbox.protocol import ToolCall


@dataclass(slots=True)
class ContentDelta:
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True)
class ToolCallReady:
    """A complete, well-formed call: it can be dispatched now, while the model goes on generating."""

    call: ToolCall


@dataclass(slots=True)
class ToolCallFailed:
    """A broken block; the error goes back to the model, the other calls still run."""

    error: ParseError


@dataclass(slots=True)
class TurnEnded:
    """The model wrote a marker that ends its turn; the caller should stop generating."""

    marker: str


StreamEvent: TypeAlias = ContentDelta | ReasoningDelta | ToolCallReady | ToolCallFailed | TurnEnded


@dataclass(frozen=True)
class ParsedTurn:
    """One assistant turn, read. ``text`` is the raw output up to ``stop`` (the whole output if none)."""

    content: str
    tool_calls: list[ToolCall]
    errors: list[ParseError]
    reasoning: str = ""
    stop: str | None = None
    text: str = ""
