"""The scripted Hermes model behind Ray Serve LLM: compute, store, answer, each only when offered."""

from __future__ import annotations

from deploy.scripted_llm import scripted_reply
from orchestrator.runs import new_run
from toolbox.hermes import tool_response_payload, turn
from toolbox.protocol import ToolResult
from workers.registry import builtin_registry


def _prompt(*names: str, results: tuple[ToolResult, ...] = ()) -> str:
    registry = builtin_registry()
    tools = [entry.spec for name in names if (entry := registry.get(name)) is not None]
    prompt = new_run(tenant="t", thread_id="x", tools=tools).prefix + turn("user", "go")
    for result in results:
        prompt += turn("assistant", "(call)") + turn(
            "tool", f"<tool_response>\n{tool_response_payload(result)}\n</tool_response>"
        )
    return prompt + "<|im_start|>assistant\n"


def test_the_script_computes_then_stores_then_answers() -> None:
    first = scripted_reply(_prompt("calculator", "files"), "r1")
    assert first.startswith("(replica r1) <tool_call>") and '"calculator"' in first
    computed = ToolResult("c1", "calculator", content=391)
    second = scripted_reply(_prompt("calculator", "files", results=(computed,)), "r1")
    assert '"files"' in second and '"content": "391"' in second
    stored = ToolResult("c2", "files", content={"written": 3})
    third = scripted_reply(_prompt("calculator", "files", results=(computed, stored)), "r1")
    assert (
        third == "(replica r1) 17 * 23 = 391; I computed it with the calculator and wrote it to result.txt."
    )


def test_without_tools_it_answers_at_once() -> None:
    assert scripted_reply(_prompt(), "r2") == "(replica r2) Hello from the scripted Hermes engine."
    only = scripted_reply(_prompt("calculator", results=(ToolResult("c", "calculator", content=7),)), "r2")
    assert only == "(replica r2) 17 * 23 = 7; I computed it with the calculator."
