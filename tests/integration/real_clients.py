"""The client checks that ``test_vllm_serve.py`` runs against the whole service with the real engine (vLLM on
the CPU, SmolLM2-135M): the ``openai`` SDK on chat completions and on responses, and the README's examples
as written. A 135M model says little of sense, so the checks hold it to what the service promises whatever
it says: the calls are valid by construction (the grammar), the shapes are OpenAI's, the streams whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
from jsonschema import validate as valid

from tests.unit.test_readme import service_examples

MULTIPLY = {
    "name": "multiply",
    "description": "Multiply two whole numbers.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}
CALCULATOR = {
    "type": "mcp",
    "server_label": "caduceus",
    "allowed_tools": ["calculator"],
    "require_approval": "never",
}
ASK = [{"role": "user", "content": "What is 17 times 23?"}]


def chat(client: openai.OpenAI, model: str) -> None:
    tools: Any = [{"type": "function", "function": MULTIPLY}]
    named: Any = {"type": "function", "function": {"name": "multiply"}}
    first = client.chat.completions.create(
        model=model,
        messages=ASK,
        tools=tools,
        tool_choice=named,
        temperature=0,
        max_tokens=48,  # type: ignore[arg-type]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    valid(arguments, MULTIPLY["parameters"])  # valid by construction
    result = {"role": "tool", "tool_call_id": call.id, "content": str(arguments["a"] * arguments["b"])}
    messages: Any = [*ASK, choice.message.model_dump(exclude_none=True), result]
    answer = client.chat.completions.create(
        model=model, messages=messages, tools=tools, tool_choice="none", temperature=0, max_tokens=24
    )
    said_then = answer.choices[0]
    assert said_then.message.tool_calls is None and isinstance(said_then.message.content, str)
    assert said_then.finish_reason in ("stop", "length")
    streamed = list(
        client.chat.completions.create(
            model=model,
            messages=ASK,  # type: ignore[arg-type]
            tools=tools,
            tool_choice=named,
            temperature=0,
            max_tokens=48,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c for chunk in streamed if chunk.choices for c in chunk.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name, d.function.arguments) for d in deltas] == [  # type: ignore[union-attr]
        (0, "multiply", call.function.arguments)  # type: ignore[union-attr]
    ]  # greedy: the same call, as one delta when its block closed
    assert streamed[-1].choices == [] and streamed[-1].usage.prompt_tokens == first.usage.prompt_tokens  # type: ignore[union-attr]
    schema = {"type": "object", "properties": {"sure": {"enum": ["yes", "no"]}}, "required": ["sure"]}
    form: Any = {"type": "json_schema", "json_schema": {"name": "sure", "schema": schema, "strict": True}}
    said = client.chat.completions.create(
        model=model, messages=ASK, response_format=form, temperature=0, max_tokens=64
    )  # type: ignore[arg-type]
    valid(json.loads(said.choices[0].message.content or ""), schema)


def responses(client: openai.OpenAI, model: str) -> None:
    choice: Any = {"type": "mcp", "server_label": "caduceus", "name": "calculator"}
    stream = client.responses.create(
        model=model,
        input="What is 17 * 23?",
        tools=[CALCULATOR],  # type: ignore[list-item]
        tool_choice=choice,
        max_tool_calls=1,
        max_output_tokens=48,
        temperature=0,
        background=True,
        stream=True,
    )
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_item.added":
            break
    stream.close()
    response_id = seen[0].response.id  # type: ignore[union-attr]
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
    numbers = [event.sequence_number for event in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type in ("response.completed", "response.incomplete"), rest[-1]
    done = client.responses.retrieve(response_id)
    call = next(item for item in done.output if item.type == "mcp_call")
    assert call.name == "calculator" and call.output, call  # type: ignore[union-attr]
    assert call.error is None, call  # type: ignore[union-attr]  # the tool workers ran it: a result
    follow = client.responses.create(
        model=model,
        input="Say it in words.",
        previous_response_id=done.id,
        tool_choice="none",
        max_output_tokens=24,
    )
    assert follow.status in ("completed", "incomplete") and follow.previous_response_id == done.id
    assert all(item.type == "message" for item in follow.output), follow.output
    function: Any = {"type": "function", **MULTIPLY}
    asked = client.responses.create(
        model=model,
        input="What is 17 times 23?",
        tools=[function],
        tool_choice={"type": "function", "name": "multiply"},
        max_output_tokens=48,
        temperature=0,
    )
    (call,) = [item for item in asked.output if item.type == "function_call"]
    arguments = json.loads(call.arguments)  # type: ignore[union-attr]
    valid(arguments, MULTIPLY["parameters"])
    output: Any = {
        "type": "function_call_output",
        "call_id": call.call_id,
        "output": str(arguments["a"] * arguments["b"]),
    }  # type: ignore[union-attr]
    answered = client.responses.create(
        model=model,
        input=[output],
        previous_response_id=asked.id,
        tools=[function],
        tool_choice="none",
        max_output_tokens=24,
    )
    assert answered.status in ("completed", "incomplete"), answered
    assert all(item.type == "message" for item in answered.output), answered.output


def readme(url: str) -> list[str]:
    """Runs each of the README's service examples as written (shell in bash, Python in a new interpreter);
    returns what each printed."""
    env = os.environ | {
        "CADUCEUS_URL": url,
        "CADUCEUS_API_KEY": "key-a",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    printed = []
    for language, code in service_examples():
        command = (
            ["bash", "-euo", "pipefail", "-c", code] if language == "sh" else [sys.executable, "-c", code]
        )
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, (code, done.stdout[-2000:], done.stderr[-4000:])
        assert "Traceback" not in done.stderr, done.stderr[-4000:]
        printed.append(done.stdout)
    return printed
