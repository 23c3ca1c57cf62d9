"""Server-Sent Events with resume, and the OpenAI-compatible chat completions, over a real service."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api_support import A
from tests.integration.conftest_api import api_client, sse, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[httpx.Client]:
    with api_client(redis_url, worker=True) as http:
        yield http


def _events(client: httpx.Client, run_id: str, last: str | None = None) -> list[dict[str, str]]:
    headers = {**A, "Last-Event-ID": last} if last else A
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse(response))


def test_events_stream_to_the_end_and_resume_after_any_id(client: httpx.Client) -> None:
    run = client.post("/v1/runs", json={"input": "tool hi", "tools": ["echo"]}, headers=A).json()
    # Read while the run goes on: the stream ends by itself after the final event.
    live = _events(client, run["id"])
    kinds = [frame["event"] for frame in live if frame["event"] != "delta"]
    # A call is told as it starts and its result as it ends, before the step that made it is committed.
    assert kinds == ["tool_call", "tool_result", "step", "step", "finished"]
    # The model's text streams as deltas: per step, they add up to exactly what the model wrote.
    deltas = [json.loads(frame["data"]) for frame in live if frame["event"] == "delta"]
    said = ["".join(d["text"] for d in deltas if d["step"] == step) for step in (0, 1)]
    assert said[0].startswith("<tool_call>") and '"tool hi"' in said[0]
    assert said[1] == "echo: tool hi"
    call, result = [json.loads(frame["data"]) for frame in live if frame["event"] != "delta"][:2]
    assert (call["name"], call["arguments"], call["call_id"]) == (
        "echo",
        {"text": "tool hi"},
        result["call_id"],
    )
    assert (result["ok"], result["content"]) == (True, '"tool hi"')
    assert json.loads(live[-1]["data"])["stop_reason"] == "answer"
    ids = [frame["id"] for frame in live]
    assert len(set(ids)) == len(ids)
    for n, ident in enumerate(ids):
        resumed = _events(client, run["id"], last=ident)
        assert [frame["id"] for frame in resumed] == ids[n + 1 :]
        assert [frame["data"] for frame in resumed] == [frame["data"] for frame in live[n + 1 :]]


def test_chat_completions_non_streaming(client: httpx.Client) -> None:
    body = {
        "model": "hermes-3-3b",
        "messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}],
    }
    response = client.post("/v1/chat/completions", json=body, headers=A)
    assert response.status_code == 200
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "echo: hello"
    assert completion["choices"][0]["finish_reason"] == "stop"
    # A model, not an agent: nothing was submitted as a run.
    assert client.get("/v1/runs", headers=A).json()["data"] == []


def test_chat_completions_streaming(client: httpx.Client) -> None:
    body = {"model": "hermes-3-3b", "stream": True, "messages": [{"role": "user", "content": "hey"}]}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=A) as response:
        assert response.status_code == 200
        frames = [frame["data"] for frame in sse(response)]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(data) for data in frames[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == "echo: hey" and len(chunks) > 3  # token by token
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_run_that_fails_reads_failed_and_ends_its_streams(client: httpx.Client) -> None:
    run = client.post("/v1/runs", json={"input": "crash now"}, headers=A).json()
    assert [frame["event"] for frame in _events(client, run["id"])] == ["failed"]
    failed = wait_for(client, run["id"], "failed")
    # A stable message: the exception's own text (internals) stays in the worker's log.
    assert (
        failed["error"] == "internal_error: the run failed on the service's side (its logs have the details)"
    )
    assert "the engine broke" not in client.get(f"/v1/runs/{run['id']}/events", headers=A).text
    body = {"model": "hermes-3-3b", "messages": [{"role": "user", "content": "crash"}]}
    response = client.post("/v1/chat/completions", json=body, headers=A)
    assert response.status_code == 500  # the scripted engine raised: our fault, and only its code shows
    assert response.json()["error"] == {
        "type": "api_error",
        "code": "internal_error",
        "message": "internal error",
    }
