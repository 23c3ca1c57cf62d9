"""The Hermes wire format (the README documents it): render prompts, read model output, validate calls.

The public contract other parts rely on:

- ``render_prompt(messages, tools=None, *, json_schema=None, add_generation_prompt=True, style="tool_use")``
- ``parse(text) -> ParsedTurn`` and ``StreamParser`` (``feed`` / ``finish``), equal for every chunking
- ``validate(call, spec)`` -> ``ToolError | None``
- ``render_tool_turn(results)``, ``tool_response_payload(result)`` (section 4)
- ``render_json_mode(schema)``, ``check_json_answer(text, schema)`` (section 5)
- ``neutralize(text)`` (rule 2)
"""

from toolbox.hermes.decode import ParseError
from toolbox.hermes.events import (
    ContentDelta,
    ParsedTurn,
    ReasoningDelta,
    StreamEvent,
    ToolCallFailed,
    ToolCallReady,
    TurnEnded,
)
from toolbox.hermes.jsonmode import JsonAnswer, check_json_answer, render_json_mode
from toolbox.hermes.parse import StreamParser, parse
from toolbox.hermes.render import (
    STYLES,
    assistant_turn,
    describe_tool,
    python_type,
    render_prompt,
    render_tool_turn,
    render_tools_system,
    tool_response_payload,
    turn,
)
from toolbox.hermes.tokens import STOP, contains_control, neutralize, neutralize_json, neutralize_turns
from toolbox.hermes.validate import validate

__all__ = [
    "STOP",
    "STYLES",
    "ContentDelta",
    "JsonAnswer",
    "ParseError",
    "ParsedTurn",
    "ReasoningDelta",
    "StreamEvent",
    "StreamParser",
    "ToolCallFailed",
    "ToolCallReady",
    "TurnEnded",
    "assistant_turn",
    "check_json_answer",
    "contains_control",
    "describe_tool",
    "neutralize",
    "neutralize_json",
    "neutralize_turns",
    "parse",
    "python_type",
    "render_json_mode",
    "render_prompt",
    "render_tool_turn",
    "render_tools_system",
    "tool_response_payload",
    "turn",
    "validate",
]
