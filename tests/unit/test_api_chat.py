"""``/v1/chat/completions`` as a Hermes model over the scripted engine (no store involved): the prompt is our
toolbox's, the answer our parser's, in OpenAI's shapes, streamed or not; what it cannot honour is a 400
naming the field. (The OpenAI SDKs against a real server: ``tests/integration/test_clients_openai.py``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.engines import ScriptedEngine
from tests.api_support import A, frames
from tests.unit.api_memory import MemoryApi, memory_api
from toolbox.hermes import render_prompt
from toolbox.hermes.constraint import json_answer, tool_calls
from toolbox.protocol import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolResult,
    ToolSpec,
    UserMessage,
)

MODEL = "hermes-3-3b"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SPEC = ToolSpec("get_weather", "The weather in a city.", WEATHER["function"]["parameters"])
ASK = 'call get_weather {"city": "Paris"}'


class Chat:
    def __init__(self, api: MemoryApi, engine: ScriptedEngine) -> None:
        self.api, self.engine = api, engine

    def post(self, **body: Any) -> Any:
        return self.api.http.post("/v1/chat/completions", json={"model": MODEL, **body}, headers=A)

    def chunks(self, **body: Any) -> list[Any]:
        with self.api.http.stream(
            "POST", "/v1/chat/completions", json={"model": MODEL, "stream": True, **body}, headers=A
        ) as response:
            assert response.status_code == 200
            data = [frame["data"] for frame in frames(response.iter_lines())]
        assert data[-1] == "[DONE]"
        return [json.loads(one) for one in data[:-1]]


@pytest.fixture
def chat(request: pytest.FixtureRequest) -> Iterator[Chat]:
    script = getattr(request, "param", None)
    from tests.api_support import script as default  # noqa: PLC0415

    engine = ScriptedEngine(script or default)
    with memory_api(engine=engine) as api:
        yield Chat(api, engine)


def test_a_tool_call_comes_back_as_tool_calls_and_the_tool_message_goes_in_as_a_tool_turn(chat: Chat) -> None:
    user = {"role": "user", "content": ASK}
    first = chat.post(messages=[{"role": "system", "content": "Be brief."}, user], tools=[WEATHER])
    assert first.status_code == 200, first.text
    body = first.json()
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert (call["type"], call["function"]) == (
        "function",
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    )
    assert call["id"].startswith("call_") and body["object"] == "chat.completion"
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        > 0
    )
    answer = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": call["id"], "content": '{"sky": "sunny"}'}
    second = chat.post(
        messages=[{"role": "system", "content": "Be brief."}, user, answer, result], tools=[WEATHER]
    )
    assert second.json()["choices"][0]["message"] == {
        "role": "assistant",
        "content": 'tool said: {"sky": "sunny"}',
        "tool_calls": None,
        "refusal": None,
    }
    assert second.json()["choices"][0]["finish_reason"] == "stop"
    # Rendered by our toolbox: the trained tools prompt, then each message's turn, the tool's by its name.
    messages = [
        SystemMessage("Be brief."),
        UserMessage(ASK),
        AssistantMessage(tool_calls=(ToolCall(call["id"], "get_weather", {"city": "Paris"}),)),
        ToolMessage((ToolResult(call["id"], "get_weather", {"sky": "sunny"}),)),
    ]
    assert chat.engine.requests[1].prompt == render_prompt(messages, [SPEC])
    assert chat.engine.requests[0].prompt == render_prompt(messages[:2], [SPEC])
    # One conversation, one session: both requests go to the replica that holds its prefix.
    assert chat.engine.requests[0].session_id == chat.engine.requests[1].session_id != ""


def test_contents_may_be_lists_of_text_parts_but_nothing_else(chat: Chat) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]
    ok = chat.post(messages=[{"role": "user", "content": parts}])
    assert ok.json()["choices"][0]["message"]["content"] == "echo: hello\nthere"
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    refused = chat.post(messages=[{"role": "user", "content": [parts[0], image]}])
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_request",
        "message": "messages[0].content[1]: a part of type 'image_url' is not supported (text only)",
        "param": "messages[0].content[1]",
    }


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"temprature": 1}, "temprature", "unknown field"),
        ({"n": 2}, "n", "only 1 choice"),
        ({"logprobs": True}, "logprobs", "not returned"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "only 0"),
        ({"model": "gpt-9"}, "model", "no model 'gpt-9'"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
            "no tool named",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options", "needs stream"),
        (
            {"messages": [{"role": "tool", "tool_call_id": "x", "content": "1"}]},
            "messages[0].tool_call_id",
            "no earlier",
        ),
        ({"messages": [{"role": "function", "name": "f", "content": "1"}]}, "messages.0", "does not match"),
        (
            {"tools": [{**WEATHER, "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters",
            "not a valid JSON Schema",
        ),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_the_field(
    chat: Chat, body: dict[str, Any], param: str, says: str
) -> None:
    response = chat.post(**({"messages": [{"role": "user", "content": "hi"}]} | body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert "Traceback" not in response.text and chat.engine.requests == []


STREAMED = '  Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call> and more  \n'


@pytest.mark.parametrize("chat", [lambda prompt: STREAMED], indirect=True)
def test_streaming_sends_text_deltas_and_each_call_as_it_closes(chat: Chat) -> None:
    chunks = chat.chunks(
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER],
        stream_options={"include_usage": True},
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    text = "".join(delta.get("content") or "" for delta in deltas)
    calls = [call for delta in deltas for call in delta.get("tool_calls", [])]
    assert len([d for d in deltas if d.get("content")]) > 2  # token by token, not one piece
    assert text == "Let me look.\n and more"  # the whole's outer whitespace left out, as batch does
    assert [(c["index"], c["function"]) for c in calls] == [
        (0, {"name": "get_weather", "arguments": '{"city": "Oslo"}'})
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    # The same output, not streamed, reads the same.
    whole = chat.post(messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER]).json()["choices"][
        0
    ]
    assert (
        whole["message"]["content"] == text
        and whole["message"]["tool_calls"][0]["function"] == calls[0]["function"]
    )


def test_json_schema_is_json_mode_under_the_grammar(chat: Chat) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    body = chat.post(
        messages=[{"role": "user", "content": '{"city": "Rome"}'}], response_format=response_format
    ).json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"city": "Rome"}
    request = chat.engine.requests[0]
    assert request.constraint == json_answer(schema)
    assert request.prompt == render_prompt([UserMessage('{"city": "Rome"}')], json_schema=schema)


def test_tool_choice_constrains_and_bounds_what_comes_back(chat: Chat) -> None:
    two = 'call get_weather {"city": "A"} and call get_weather {"city": "B"}'
    messages = [{"role": "user", "content": two}]
    required = chat.post(messages=messages, tools=[WEATHER], tool_choice="required").json()
    assert len(required["choices"][0]["message"]["tool_calls"]) == 2
    assert chat.engine.requests[-1].constraint == tool_calls([SPEC], require=True)
    single = chat.post(messages=messages, tools=[WEATHER], parallel_tool_calls=False).json()
    assert [c["function"]["arguments"] for c in single["choices"][0]["message"]["tool_calls"]] == [
        '{"city": "A"}'
    ]
    none = chat.post(messages=messages, tools=[WEATHER], tool_choice="none").json()["choices"][0]
    assert (none["message"]["tool_calls"], none["finish_reason"]) == (None, "stop")
    named = {"type": "function", "function": {"name": "get_weather"}}
    chat.post(messages=messages, tools=[WEATHER], tool_choice=named)
    assert chat.engine.requests[-1].constraint == tool_calls([SPEC], require=True, single=True)
    # The scripted model is not constrained by default: tool_choice auto leaves the grammar out.
    chat.post(messages=messages, tools=[WEATHER])
    assert chat.engine.requests[-1].constraint is None


def test_sampling_stop_and_max_tokens_reach_the_engine(chat: Chat) -> None:
    chat.post(
        messages=[{"role": "user", "content": "hi"}],
        temperature=0,
        top_p=0.5,
        seed=7,
        stop="END",
        max_completion_tokens=9,
    )
    request = chat.engine.requests[-1]
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.seed) == (0, 0.5, 7)
    assert request.stop[-1] == "END" and "<|im_end|>" in request.stop and request.max_tokens == 9
    cut = chat.post(messages=[{"role": "user", "content": "a long one"}], max_tokens=2).json()["choices"][0]
    assert (cut["message"]["content"], cut["finish_reason"]) == ("echo:", "length")


def test_models_are_listed(chat: Chat) -> None:
    listed = chat.api.http.get("/v1/models", headers=A).json()
    assert listed["object"] == "list" and [model["id"] for model in listed["data"]] == [MODEL]
