"""The README's Python example runs as written, and its wire-format examples are what we render."""

from __future__ import annotations

import re
from pathlib import Path

from toolbox.hermes import render_json_mode, render_prompt, turn
from toolbox.protocol import AssistantMessage, Message, ToolMessage, ToolResult, ToolSpec, UserMessage

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(capsys: object) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "the README lost its Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_readme_wire_format_examples_are_exact() -> None:
    blocks = re.findall(r"```text\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    number = {"type": "integer"}
    add = ToolSpec(
        "add",
        "Add two integers.",
        {
            "type": "object",
            "properties": {
                "a": {**number, "description": "first addend"},
                "b": {**number, "description": "second addend"},
            },
            "required": ["a", "b"],
        },
    )
    call = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    exchange: list[Message] = [
        UserMessage("What is 2 + 3?"),
        AssistantMessage(raw=call),
        ToolMessage((ToolResult("call_0", "add", 5),)),
        AssistantMessage(raw="2 + 3 = 5."),
    ]
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    assert render_prompt(exchange, [add], add_generation_prompt=False) in blocks
    assert turn("system", render_json_mode(schema)) in blocks
