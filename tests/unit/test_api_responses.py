"""``/v1/responses`` over the in-memory store: a response is a run (run here by hand, as a worker would), its
output items come from the turns it committed, its events stream numbered and resume after any number,
a chain continues its thread (a client's calls answered with function_call_output items), and what it
cannot be is a 400 naming the field. (The openai SDK against a live service: ``test_clients_openai``.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_support import A, B, frames, script
from tests.unit.api_memory import MemoryApi, memory_api

SERVED = {"type": "mcp", "server_label": "caduceus", "allowed_tools": ["echo"]}
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def api() -> Iterator[MemoryApi]:
    with memory_api() as api:
        yield api


def respond(api: MemoryApi, **body: Any) -> dict[str, Any]:
    """A background response, run to its end here; returns it as retrieved."""
    created = api.http.post("/v1/responses", json={"background": True, **body}, headers=A)
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued"
    api.run_queued(script, "acme", created.json()["id"])
    found: dict[str, Any] = api.http.get(f"/v1/responses/{created.json()['id']}", headers=A).json()
    return found


def events(api: MemoryApi, response_id: str, after: int | None = None) -> list[dict[str, Any]]:
    query = "stream=true" + (f"&starting_after={after}" if after is not None else "")
    with api.http.stream("GET", f"/v1/responses/{response_id}?{query}", headers=A) as response:
        assert response.status_code == 200
        return [json.loads(frame["data"]) for frame in frames(response.iter_lines())]


def test_a_response_is_a_run_whose_output_is_its_tool_calls_and_its_message(api: MemoryApi) -> None:
    done = respond(api, input='call echo {"text": "hi"}', tools=[SERVED], metadata={"who": "me"})
    assert done["id"].startswith("resp_") and (done["status"], done["object"]) == ("completed", "response")
    call, message = done["output"]
    assert (call["type"], call["name"], call["arguments"], call["status"]) == (
        "mcp_call",
        "echo",
        '{"text": "hi"}',
        "completed",
    )
    assert (call["server_label"], call["output"], call["error"]) == ("caduceus", '"hi"', None)
    assert message["content"][0]["text"] == 'tool said: "hi"' and message["status"] == "completed"
    assert done["metadata"] == {"who": "me"} and done["tools"] == [SERVED]
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    run = api.http.get(f"/v1/runs/{done['id']}", headers=A).json()
    assert (run["status"], run["steps"], run["output"]) == ("completed", 2, 'tool said: "hi"')
    assert api.http.get(f"/v1/responses/{done['id']}", headers=B).status_code == 404


def test_its_events_are_numbered_and_resume_after_any_number_without_gap_or_duplicate(api: MemoryApi) -> None:
    done = respond(api, input='call echo {"text": "hi"}', tools=[SERVED])
    every = events(api, done["id"])
    assert [event["sequence_number"] for event in every] == list(range(len(every)))
    kinds = [event["type"] for event in every]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.mcp_call.completed" in kinds and "response.output_text.delta" in kinds
    assert every[-1]["response"] == done
    items = [event["item"] for event in every if event["type"] == "response.output_item.done"]
    assert items == done["output"]  # streaming equals batch, item for item
    for n in (0, 5, len(every) - 2):
        assert events(api, done["id"], after=n) == every[n + 1 :]


def test_a_client_function_ends_the_response_and_its_output_continues_the_chain(api: MemoryApi) -> None:
    first = respond(api, input='call weather {"city": "Oslo"}', tools=[WEATHER, SERVED])
    (call,) = first["output"]
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "weather", '{"city": "Oslo"}')
    assert first["status"] == "completed"
    assert api.http.get(f"/v1/runs/{first['id']}", headers=A).json()["status"] == "requires_action"
    body = {"previous_response_id": first["id"], "tools": [WEATHER]}
    missing = api.http.post("/v1/responses", json=body | {"input": "well?"}, headers=A)
    assert missing.status_code == 400 and call["call_id"] in missing.json()["error"]["message"]
    wrong = [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]
    assert api.http.post("/v1/responses", json=body | {"input": wrong}, headers=A).status_code == 400
    answer = [{"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "blue"}'}]
    second = respond(api, **body, input=answer)
    assert second["output"][0]["content"][0]["text"] == 'tool said: {"sky": "blue"}'
    assert second["previous_response_id"] == first["id"]
    listed = api.http.get(f"/v1/responses/{second['id']}/input_items", headers=A).json()
    assert [item["type"] for item in listed["data"]] == ["function_call_output"]
    # The chain is one thread; it goes on only from its latest response.
    again = api.http.post("/v1/responses", json=body | {"input": answer}, headers=A)
    assert again.status_code == 409 and second["id"] in again.json()["error"]["message"]
    third = respond(api, previous_response_id=second["id"], input="and now?")
    assert third["output"][0]["content"][0]["text"] == "echo: and now?"
    thread = api.http.get(f"/v1/runs/{third['id']}", headers=A).json()["thread_id"]
    assert thread == api.http.get(f"/v1/runs/{first['id']}", headers=A).json()["thread_id"]


def test_a_response_can_be_cancelled_and_deleted(api: MemoryApi) -> None:
    created = api.http.post("/v1/responses", json={"input": "hi", "background": True}, headers=A).json()
    busy = api.http.delete(f"/v1/responses/{created['id']}", headers=A)
    assert busy.status_code == 409
    cancelled = api.http.post(f"/v1/responses/{created['id']}/cancel", headers=A).json()
    assert cancelled["status"] == "cancelled"
    assert [e["type"] for e in events(api, created["id"])][-1] == "response.incomplete"
    assert api.http.delete(f"/v1/responses/{created['id']}", headers=B).status_code == 404
    deleted = api.http.delete(f"/v1/responses/{created['id']}", headers=A)
    assert deleted.json() == {"id": created["id"], "object": "response.deleted", "deleted": True}
    assert api.http.get(f"/v1/responses/{created['id']}", headers=A).status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "temprature": 1}, "temprature"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [SERVED | {"server_url": "https://mcp.example"}]}, "tools[0].server_url"),
        ({"input": "hi", "tools": [SERVED | {"allowed_tools": ["nope"]}]}, "tools[0].allowed_tools"),
        ({"input": "hi", "tools": [WEATHER | {"name": "echo"}, SERVED]}, "tools"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        ({"input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"input": "hi", "reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": "hi", "model": "gpt-9"}, "model"),
        ({"input": []}, "input"),
    ],
)
def test_what_a_response_cannot_be_is_a_400_naming_the_field(
    api: MemoryApi, body: dict[str, Any], param: str
) -> None:
    response = api.http.post("/v1/responses", json=body, headers=A)
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["param"] == param, response.json()
    assert api.store.queue == []  # nothing was submitted


def test_a_run_is_no_response_and_another_tenants_response_is_not_found(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "x"}, headers=A).json()
    assert api.http.get(f"/v1/responses/{run['id']}", headers=A).status_code == 404
    done = respond(api, input="hi")
    for method, path in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/input_items"),
        ("GET", "?stream=true"),
    ]:
        assert api.http.request(method, f"/v1/responses/{done['id']}{path}", headers=B).status_code == 404
    follow = {"input": "more", "previous_response_id": done["id"]}
    assert api.http.post("/v1/responses", json=follow, headers=B).status_code == 404
