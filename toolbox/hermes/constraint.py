"""Decoding constraints for Hermes output, as xgrammar structural tags (plain data, nothing imported).

``tool_calls(tools)`` allows free text, or ``<tool_call>`` blocks whose JSON names one of the offered
tools and whose arguments validate against that tool's parameters schema: with it, every call a model
writes is well-formed by construction. ``json_answer(schema)`` constrains a JSON-mode answer. The same
document is what vLLM's structured outputs take (``structured_outputs={"structural_tag":
...}``), so one per-run switch serves the local engine and the GPU presets alike.

Inside constrained arguments, strings may not contain the format's own tags and turn markers (a small
model otherwise writes ``</tool_call>`` into an unclosed string), and whitespace runs are at most one
character. ``text_only()`` is a turn that may not call at all. Only the name-first call style can be
constrained: the tool is chosen by the text that opens the block, and in the arguments-first style
every block opens the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from toolbox.hermes.tokens import CALL_CLOSE, CALL_OPEN, IM_END, IM_START, RESPONSE_OPEN
from toolbox.protocol import ToolSpec

#: Never inside a constrained argument string: the tags and turn markers of the format itself.
_EXCLUDED = (CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, IM_END, IM_START)
#: Never in a turn's free text: a fake tool response (a small model echoes the last one, even as
#: ``<tool_response >``, hence the open prefix).
_NO_RESPONSE = ("<tool_response", "</tool_response")


def tool_calls(tools: Sequence[ToolSpec], *, require: bool = False, single: bool = False) -> dict[str, Any]:
    """Free text or calls to ``tools`` (``require``: at least one call must be written; ``single``: the
    turn ends with its first call). The free text may not fake a tool response."""
    if not tools:
        raise ValueError("a tool-call constraint needs at least one tool")
    tags = [
        {
            "type": "tag",
            "begin": f'{CALL_OPEN}\n{{"name": {json.dumps(spec.name, ensure_ascii=False)}, "arguments": ',
            "content": {
                "type": "json_schema",
                "json_schema": spec.parameters,
                # A small model may wander inside a string; it must leave through the closing quote.
                "excludes": list(_EXCLUDED),
                "max_whitespace_cnt": 1,
            },
            "end": f"}}\n{CALL_CLOSE}",
        }
        for spec in tools
    ]
    return {
        "type": "structural_tag",
        "format": {
            "type": "triggered_tags",
            "triggers": [CALL_OPEN],
            "tags": tags,
            "at_least_one": require,
            "stop_after_first": single,
            "excludes": list(_NO_RESPONSE),
        },
    }


def text_only() -> dict[str, Any]:
    """Free text with no Hermes tag in it: a turn that must answer. Any ``<tool`` is refused, not only
    the real tags: a small model otherwise invents ``<tool_call_response>`` to echo the last result."""
    return {"type": "structural_tag", "format": {"type": "any_text", "excludes": ["<tool", "</tool"]}}


def json_answer(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An answer that is one JSON value valid against ``schema``."""
    return {"type": "structural_tag", "format": {"type": "json_schema", "json_schema": dict(schema)}}
