"""The README's Python example runs as written, and its wire-format examples are what we render."""

from __future__ import annotations

import re
from pathlib import Path

from toolbox.hermes import render_json_mode, render_prompt, turn
from toolbox.protocol import AssistantMessage, Message, ToolMessage, ToolResult, ToolSpec, UserMessage

README = Path(__file__).resolve().parents[2] / "README.md"
#: The section whose examples talk to a running service: ``tests/integration/test_vllm_serve.py`` runs
#: them against the whole service (``service_examples``).
SERVICE_SECTION = "## Talking to the service"


def service_examples() -> list[tuple[str, str]]:
    """The (language, code) of each example in the README's service section, in order."""
    text = README.read_text(encoding="utf-8")
    start = text.index(SERVICE_SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```(sh|python)\n(.*?)```", section, re.DOTALL)


def test_readme_python_example_runs(capsys: object) -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index(SERVICE_SECTION)
    local = text[:start] + text[text.index("\n## ", start + 1) :]
    blocks = re.findall(r"```python\n(.*?)```", local, re.DOTALL)
    assert blocks, "the README lost its Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_the_service_section_shows_each_client() -> None:
    code = "\n".join(block for _, block in service_examples())
    for client in (
        "/v1/runs",
        "from orchestrator.client import Client",
        "chat.completions.create",
        "from agents import",
        "from langchain_openai import ChatOpenAI",
    ):
        assert client in code
    assert "responses.create" in code and "starting_after" in code and "get_weather" not in code


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
