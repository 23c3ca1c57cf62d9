"""The clients people already use, against a running service (``conftest_api``: uvicorn on loopback, a real
redis-server, a real orchestrator worker; the scripted Hermes model): the official ``openai`` SDK on chat
completions and on responses, the OpenAI Agents SDK with Caduceus as its model provider, and LangChain's
``ChatOpenAI``. (The same clients against the real vLLM engine: ``test_vllm_serve.py``.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.api_support import A
from tests.integration.conftest_api import Service

pytestmark = pytest.mark.integration
MODEL = "hermes-3-3b"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASK = 'call get_weather {"city": "Paris"}'


@pytest.fixture(scope="module")
def url(redis_server: str) -> Iterator[str]:
    with Service(redis_server, worker=True).running() as service:
        yield service.url


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="key-a", max_retries=0) as sdk:
        yield sdk


def test_openai_chat_completions_run_a_client_side_tool_loop(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": ASK}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny"})})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert (second.choices[0].finish_reason, second.choices[0].message.content) == (
        "stop",
        'tool said: {"sky": "sunny"}',
    )
    assert second.usage is not None and second.usage.prompt_tokens > first.usage.prompt_tokens


def test_openai_chat_completions_stream_tool_call_deltas_and_usage_last(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ASK}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert [(c.index, c.function.name, c.function.arguments) for c in calls if c.function] == [
        (0, "get_weather", '{"city": "Paris"}')
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])
    text = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in text if c.choices) == "echo: stream me"


class Place(BaseModel):
    city: str
    population: int


def test_openai_chat_completions_parse_a_json_schema_answer(client: openai.OpenAI) -> None:
    said = '{"city": "Rome", "population": 2750000}'
    parsed = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": said}], response_format=Place
    )
    assert parsed.choices[0].message.parsed == Place(city="Rome", population=2750000)


def test_openai_errors_are_the_sdks_exceptions_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=3)
    assert refused.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError, match="unknown field"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], extra_body={"temprature": 1}
        )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=str(client.base_url), api_key="nope", max_retries=0).models.list()


def test_the_agents_sdk_runs_an_agent_with_a_local_tool_on_caduceus(url: str) -> None:
    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: The city.
        """
        ran.append(city)
        return f"sunny in {city}"

    async def main() -> Any:
        set_tracing_disabled(True)  # traces would go to OpenAI's servers
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="key-a", max_retries=0)
        try:
            model = OpenAIChatCompletionsModel(model=MODEL, openai_client=sdk)
            agent = Agent(name="weather", instructions="Answer briefly.", tools=[get_weather], model=model)
            return await Runner.run(agent, ASK)
        finally:
            await sdk.close()

    result = asyncio.run(main())
    assert ran == ["Paris"]
    assert result.final_output == 'tool said: "sunny in Paris"'


def test_langchain_chat_openai_with_bound_tools_gets_parsed_tool_calls(url: str) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    chat = ChatOpenAI(model=MODEL, base_url=f"{url}/v1", api_key="key-a", max_retries=0)
    reply = chat.bind_tools([get_weather]).invoke(ASK)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert reply.response_metadata["finish_reason"] == "tool_calls"


SERVED = {"type": "mcp", "server_label": "caduceus", "allowed_tools": ["pause"], "require_approval": "never"}


def test_a_background_response_streams_drops_and_resumes_after_its_last_event(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model=MODEL,
        input='call pause {"s": 0.4}',
        tools=[SERVED],
        background=True,
        stream=True,
    )
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.mcp_call.in_progress":
            break  # the tool is running: the client drops the stream here
    stream.close()
    response_id = seen[0].response.id
    assert client.responses.retrieve(response_id).status == "in_progress"
    rest = list(client.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number))
    numbers = [event.sequence_number for event in seen + rest]
    assert numbers == list(range(len(numbers)))  # no gap, no duplicate
    final = rest[-1]
    assert final.type == "response.completed"
    done = final.response
    assert [item.type for item in done.output] == ["mcp_call", "message"]
    assert done.output[0].name == "pause" and done.output[0].output == '"paused"'
    assert done.output_text == 'tool said: "paused"'
    again = list(client.responses.retrieve(response_id, stream=True))
    assert [e.model_dump() for e in again] == [e.model_dump() for e in seen + rest]


def test_a_previous_response_id_chain_is_one_conversation(client: openai.OpenAI, url: str) -> None:
    first = client.responses.create(model=MODEL, input="hello", instructions="Be brief.")
    assert (first.status, first.output_text) == ("completed", "echo: hello")
    second = client.responses.create(model=MODEL, input="again", previous_response_id=first.id)
    assert second.output_text == "echo: again" and second.previous_response_id == first.id
    runs = [httpx.get(f"{url}/v1/runs/{r.id}", headers=A).json() for r in (first, second)]
    assert runs[0]["thread_id"] == runs[1]["thread_id"]
    items = client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]
    with pytest.raises(openai.ConflictError):
        client.responses.create(model=MODEL, input="fork", previous_response_id=first.id)
    other = openai.OpenAI(base_url=str(client.base_url), api_key="key-b", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(second.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_a_client_side_function_tool_round_trip_on_responses(client: openai.OpenAI) -> None:
    weather = {"type": "function", **WEATHER["function"]}
    first = client.responses.create(model=MODEL, input=ASK, tools=[weather])
    (call,) = first.output
    assert call.type == "function_call" and (call.name, json.loads(call.arguments)) == (
        "get_weather",
        {"city": "Paris"},
    )
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = client.responses.create(
        model=MODEL,
        input=[answer],
        previous_response_id=first.id,
        tools=[weather],
    )
    assert second.output_text == 'tool said: "sunny"'
