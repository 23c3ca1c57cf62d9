"""Constraint documents (xgrammar structural tags) built from tool specs."""

from __future__ import annotations

import pytest

from toolbox.hermes.constraint import json_answer, tool_calls
from toolbox.protocol import ToolSpec

SPEC = ToolSpec("multiply", "Multiply.", {"type": "object", "properties": {"a": {"type": "integer"}}})


def test_tool_call_tags_open_with_the_tool_name_and_close_the_block() -> None:
    document = tool_calls([SPEC], require=True)
    fmt = document["format"]
    assert fmt["type"] == "triggered_tags"
    assert fmt["triggers"] == ["<tool_call>"]
    assert fmt["at_least_one"] is True
    (tag,) = fmt["tags"]
    assert tag["begin"] == '<tool_call>\n{"name": "multiply", "arguments": '
    assert tag["end"] == "}\n</tool_call>"
    assert tag["content"]["json_schema"] == SPEC.parameters
    assert "</tool_call>" in tag["content"]["excludes"]


def test_a_constraint_needs_tools() -> None:
    with pytest.raises(ValueError, match="at least one tool"):
        tool_calls([])


def test_json_answer() -> None:
    assert json_answer({"type": "object"}) == {
        "type": "structural_tag",
        "format": {"type": "json_schema", "json_schema": {"type": "object"}},
    }
