"""Decoding constraints for Hermes output, as xgrammar structural tags (plain data, nothing imported).

``tool_calls(tools)`` allows free text, or ``<tool_call>`` blocks whose JSON names one of the offered
tools and whose arguments validate against that tool's parameters schema: with it, every call a model
writes is well-formed by construction. ``json_answer(schema)`` constrains a JSON-mode answer. The same
document is what vLLM's structured outputs take (``structured_outputs={"structural_tag":
...}``), so one per-run switch serves the local engine and the GPU presets alike.

Inside constrained arguments, strings may not contain the format's own tags and turn markers (a small
model otherwise writes ``</tool_call>`` into an unclosed string), and whitespace runs are at most one
character. Only the name-first call style can be constrained: the tool is chosen by the text that
opens the block, and in the arguments-first style every block opens the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from toolbox.hermes.tokens import CALL_CLOSE, CALL_OPEN, IM_END, IM_START, RESPONSE_OPEN
from toolbox.protocol import ToolSpec

#: Never inside a constrained argument string: the tags and turn markers of the format itself.
_EXCLUDED = (CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, IM_END, IM_START)


def tool_calls(tools: Sequence[ToolSpec], *, require: bool = False) -> dict[str, Any]:
    """Free text or calls to ``tools`` (``require``: at least one call must be written)."""
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
        "format": {"type": "triggered_tags", "triggers": [CALL_OPEN], "tags": tags, "at_least_one": require},
    }


def json_answer(schema: Mapping[str, Any]) -> dict[str, Any]:
    """An answer that is one JSON value valid against ``schema``."""
    return {"type": "structural_tag", "format": {"type": "json_schema", "json_schema": dict(schema)}}
