"""A run's events as Server-Sent Events (framing, ids, resume, the stream's end) and the chat endpoint's
validation, over the in-memory store."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.api_support import A, frames
from tests.unit.api_memory import MemoryApi, memory_api

CALL = '<tool_call>\n{"name": "echo", "arguments": {"text": "tool hi"}}\n</tool_call>'


@pytest.fixture
def api() -> Iterator[MemoryApi]:
    with memory_api() as served:
        yield served


def _events(api: MemoryApi, run_id: str, last: str | None = None) -> list[dict[str, str]]:
    headers = {**A, "Last-Event-ID": last} if last else A
    with api.http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    assert lines[0].startswith(":"), "the stream says at once that the run is watched"
    return list(frames(lines))


def test_events_are_framed_with_their_ids_and_resume_after_any_of_them(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "tool hi", "tools": ["echo"]}, headers=A).json()
    assert api.run_queued([CALL, "echo: tool hi"], "acme", run["id"]).stop_reason == "answer"
    frames = _events(api, run["id"])
    kinds = [frame["event"] for frame in frames if frame["event"] != "delta"]
    assert kinds == ["tool_call", "tool_result", "step", "step", "finished"]
    for frame in frames:  # each frame: its id, its kind as the SSE event, its data with the kind in it
        assert set(frame) == {"id", "event", "data"}
        assert json.loads(frame["data"])["kind"] == frame["event"]
    deltas = [json.loads(frame["data"]) for frame in frames if frame["event"] == "delta"]
    said = ["".join(d["text"] for d in deltas if d["step"] == step) for step in (0, 1)]
    assert said == [CALL, "echo: tool hi"]
    call, result = [json.loads(frame["data"]) for frame in frames if frame["event"] != "delta"][:2]
    assert (call["name"], call["arguments"], call["call_id"]) == (
        "echo",
        {"text": "tool hi"},
        result["call_id"],
    )
    assert (result["ok"], result["content"]) == (True, '"tool hi"')
    assert json.loads(frames[-1]["data"])["stop_reason"] == "answer"
    ids = [frame["id"] for frame in frames]
    assert len(set(ids)) == len(ids)
    for n, ident in enumerate(ids):
        resumed = _events(api, run["id"], last=ident)
        assert [frame["id"] for frame in resumed] == ids[n + 1 :]
        assert [frame["data"] for frame in resumed] == [frame["data"] for frame in frames[n + 1 :]]


def test_events_of_a_cancelled_queued_run_end_with_finished(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "x"}, headers=A).json()
    api.http.post(f"/v1/runs/{run['id']}/cancel", headers=A)
    frames = _events(api, run["id"])
    assert [frame["event"] for frame in frames] == ["finished"]
    assert json.loads(frames[0]["data"]) == {"kind": "finished", "stop_reason": "cancelled", "steps": 0}
    bad = api.http.get(f"/v1/runs/{run['id']}/events", headers={**A, "Last-Event-ID": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_last_event_id"
    assert api.http.get("/v1/runs/run_never/events", headers=A).status_code == 404


def test_a_failed_run_ends_its_stream_with_failed(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "x"}, headers=A).json()
    api.call(
        api.store.fail, "acme", run["id"], "engine_error: the model failed to answer; try the run again later"
    )
    assert [frame["event"] for frame in _events(api, run["id"])] == ["failed"]
    shown = api.http.get(f"/v1/runs/{run['id']}", headers=A).json()
    assert (shown["status"], shown["error"]) == (
        "failed",
        "engine_error: the model failed to answer; try the run again later",
    )


def test_chat_completions_refuse_an_unknown_model_in_the_envelope(api: MemoryApi) -> None:
    body = {"model": "gpt-9", "messages": [{"role": "user", "content": "hey"}]}
    response = api.http.post("/v1/chat/completions", json=body, headers=A)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert api.store.queue == []
