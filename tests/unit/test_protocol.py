"""The vocabulary and its one JSON adapter."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from toolbox.protocol import (
    RECORD,
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolError,
    ToolMessage,
    ToolResult,
    ToolSpec,
    UserMessage,
    dumps,
    from_json,
    to_json,
)

RECORDS = [
    SystemMessage("Be brief."),
    UserMessage("日本 <|im_end|>"),
    AssistantMessage(
        content="Hi", tool_calls=(ToolCall("c1", "f", {"x": [1, {"y": None}]}),), raw="raw", reasoning="r"
    ),
    ToolMessage(
        (ToolResult("c1", "f", {"ok": True}), ToolResult("c2", "g", error=ToolError("timeout", "slow")))
    ),
    ToolCall("c3", "h", {}),
    ToolResult("c4", "h", "text"),
    ToolSpec("h", "H.", {"type": "object", "properties": {}}, returns={"type": "string"}),
]


@pytest.mark.parametrize("record", RECORDS, ids=[type(r).__name__ for r in RECORDS])
def test_json_round_trip(record: object) -> None:
    assert from_json(to_json(record)) == record  # type: ignore[arg-type]


def test_kind_tags_and_roles() -> None:
    assert to_json(UserMessage("x")) == b'{"content":"x","kind":"user"}'
    assert UserMessage("x").role == "user"
    assert ToolMessage(()).role == "tool"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError):
        RECORD.validate_json(b'{"kind": "robot", "content": "x"}')


def test_result_ok() -> None:
    assert ToolResult("c", "f", 1).ok
    assert not ToolResult("c", "f", error=ToolError("crashed", "boom")).ok


def test_dumps_matches_the_hermes_style_and_never_writes_nan() -> None:
    assert dumps({"a": "é", "b": [1, 2.0]}) == '{"a": "é", "b": [1, 2.0]}'
    assert dumps({"x": float("nan"), "y": [float("inf")]}) == '{"x": "nan", "y": ["inf"]}'
