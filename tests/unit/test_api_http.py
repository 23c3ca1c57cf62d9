"""The REST API's HTTP behaviour (keys, validation, the error envelope, limits, 404s, idempotency, threads),
over the in-memory store: no Redis, no worker (``api_memory``). Runs stay queued."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api_support import A, B
from tests.unit.api_memory import MemoryApi, memory_api


@pytest.fixture
def api() -> Iterator[MemoryApi]:
    with memory_api() as served:
        yield served


def test_keys_are_required_and_checked(api: MemoryApi) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic a2V5LWE="}):
        response = api.http.post("/v1/runs", json={"input": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert api.http.get("/v1/tools").status_code == 401
    assert [t["name"] for t in api.http.get("/v1/tools", headers=A).json()["data"]] == ["echo", "pause"]


def test_a_submitted_run_is_queued_with_its_location_and_thread(api: MemoryApi) -> None:
    created = api.http.post("/v1/runs", json={"input": "hello", "tools": ["echo"]}, headers=A)
    assert created.status_code == 202
    run = created.json()
    assert created.headers["Location"] == f"/v1/runs/{run['id']}"
    assert (run["status"], run["steps"], run["model"]) == ("queued", 0, "hermes-3-3b")
    assert api.http.get(f"/v1/runs/{run['id']}", headers=A).json() == run
    messages = api.http.get(f"/v1/threads/{run['thread_id']}/messages", headers=A).json()["data"]
    assert messages == [{"role": "user", "content": "hello"}]
    assert api.store.queue == [("acme", run["id"])]


def test_another_tenant_gets_404_for_everything(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "mine"}, headers=A).json()
    for method, path in [
        ("GET", f"/v1/runs/{run['id']}"),
        ("GET", f"/v1/runs/{run['id']}/events"),
        ("POST", f"/v1/runs/{run['id']}/cancel"),
        ("GET", f"/v1/threads/{run['thread_id']}/messages"),
    ]:
        response = api.http.request(method, path, headers=B)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
    other = api.http.post("/v1/runs", json={"input": "x", "thread_id": run["thread_id"]}, headers=B)
    assert other.status_code == 404
    # The other tenant touched nothing: the run is still queued, its thread as it was.
    assert api.http.get(f"/v1/runs/{run['id']}", headers=A).json()["status"] == "queued"
    messages = api.http.get(f"/v1/threads/{run['thread_id']}/messages", headers=A).json()["data"]
    assert [m["content"] for m in messages] == ["mine"]


def test_idempotency_key_gives_one_run_and_refuses_a_different_body(api: MemoryApi) -> None:
    headers = {**A, "Idempotency-Key": "abc-1"}
    first = api.http.post("/v1/runs", json={"input": "once"}, headers=headers)
    again = api.http.post("/v1/runs", json={"input": "once"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    conflict = api.http.post("/v1/runs", json={"input": "twice"}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    # Keys are per tenant: the same key from another tenant is another run.
    other = api.http.post("/v1/runs", json={"input": "once"}, headers={**B, "Idempotency-Key": "abc-1"})
    assert other.json()["id"] != first.json()["id"]
    bad = api.http.post("/v1/runs", json={"input": "once"}, headers={**A, "Idempotency-Key": "k" * 256})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"


def test_errors_come_in_one_envelope() -> None:
    with memory_api(max_body_bytes=2000) as api:
        http = api.http
        cases = [
            (
                http.post(
                    "/v1/runs", content=b"{not json", headers={**A, "Content-Type": "application/json"}
                ),
                400,
            ),
            (http.get("/v1/runs/run_missing", headers=A), 404),
            (http.post("/v1/runs", json={"input": "x" * 5000}, headers=A), 413),
            (http.post("/v1/runs", json={"input": "x", "limits": {"max_steps": 0}}, headers=A), 422),
            (http.post("/v1/runs", json={"input": "x", "tools": ["nope"]}, headers=A), 422),
            (http.post("/v1/runs", json={"inptu": "x"}, headers=A), 422),
            (http.get("/v1/runs/a:b", headers=A), 404),  # an id the store could never have issued
            (http.delete("/v1/runs", headers=A), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert set(error) == {"type", "code", "message"}
            assert "Traceback" not in error["message"]
        assert "limits.max_steps" in cases[3][0].json()["error"]["message"]
        assert "tools" in cases[4][0].json()["error"]["message"]


def test_a_json_body_sent_as_a_form_is_told_to_say_it_is_json(api: MemoryApi) -> None:
    """``curl -d '{...}'`` without a content type sends a form's: FastAPI then does not read JSON."""
    form = {**A, "Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/v1/runs", "/v1/chat/completions", "/v1/responses"):
        response = api.http.post(path, content=b'{"input": "hi"}', headers=form)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_json" and "Content-Type: application/json" in error["message"]


def test_cancel_a_queued_run(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "never"}, headers=A).json()
    cancelled = api.http.post(f"/v1/runs/{run['id']}/cancel", headers=A)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["stop_reason"] == "cancelled"
    assert api.http.post("/v1/runs/run_never/cancel", headers=A).status_code == 404


def test_rate_limit_answers_429_with_retry_after() -> None:
    with memory_api(rate_per_s=0.5, burst=3) as api:
        statuses = [api.http.get("/v1/tools", headers=A).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = api.http.get("/v1/tools", headers=A)
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert int(limited.headers["Retry-After"]) >= 1
        assert api.http.get("/v1/tools", headers=B).status_code == 200  # per key


def test_health_and_readiness(api: MemoryApi) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    assert api.http.get("/readyz").status_code == 200
    assert "/v1/runs" in api.http.get("/openapi.json").json()["paths"]


def test_a_chunked_body_over_the_cap_is_cut_off_with_413() -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    with memory_api(max_body_bytes=2000) as api:
        headers = {**A, "Content-Type": "application/json"}
        response = api.http.post("/v1/runs", content=chunks(), headers=headers)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        assert api.store.queue == []


def test_a_conversation_must_end_with_the_user_and_schemas_must_be_schemas(api: MemoryApi) -> None:
    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    response = api.http.post("/v1/runs", json={"input": talk}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("input:")
    response = api.http.post("/v1/runs", json={"input": "x", "json_schema": {"type": 12}}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("json_schema:")


def test_a_conversation_given_whole_becomes_the_thread(api: MemoryApi) -> None:
    talk = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "echo: one"},
        {"role": "user", "content": "two"},
    ]
    run = api.http.post("/v1/runs", json={"input": talk}, headers=A).json()
    messages = api.http.get(f"/v1/threads/{run['thread_id']}/messages", headers=A).json()["data"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "one"),
        ("assistant", "echo: one"),
        ("user", "two"),
    ]
    assert "be brief" in api.spec("acme", run["id"]).prefix  # a system turn: in the run's prefix


def test_a_thread_takes_one_run_at_a_time(api: MemoryApi) -> None:
    first = api.http.post("/v1/runs", json={"input": "one"}, headers=A).json()
    again = api.http.post("/v1/runs", json={"input": "two", "thread_id": first["thread_id"]}, headers=A)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "thread_busy"
    api.http.post(f"/v1/runs/{first['id']}/cancel", headers=A)
    body = {"input": "two", "thread_id": first["thread_id"]}
    assert api.http.post("/v1/runs", json=body, headers=A).status_code == 202
    unknown = api.http.post("/v1/runs", json={"input": "x", "thread_id": "thread_never"}, headers=A)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


def test_an_idempotency_key_whose_request_failed_stays_free(api: MemoryApi) -> None:
    first = api.http.post("/v1/runs", json={"input": "one"}, headers=A).json()
    body = {"input": "two", "thread_id": first["thread_id"]}
    headers = {**A, "Idempotency-Key": "k-busy"}
    assert api.http.post("/v1/runs", json=body, headers=headers).status_code == 409  # the thread is busy
    api.http.post(f"/v1/runs/{first['id']}/cancel", headers=A)
    assert api.http.post("/v1/runs", json=body, headers=headers).status_code == 202


def test_model_constrained_and_tool_choice_reach_the_run_spec() -> None:
    with memory_api(models=("big", "small"), constrained_models=("small",)) as api:
        http = api.http
        plain = http.post("/v1/runs", json={"input": "hi"}, headers=A).json()
        small = http.post(
            "/v1/runs",
            headers=A,
            json={
                "input": "hi",
                "model": "small",
                "temperature": 0,
                "seed": 7,
                "tools": ["echo"],
                "tool_choice": ["echo", "none"],
                "answer_instruction": "Answer in one sentence.",
            },
        ).json()
        wordy = http.post("/v1/runs", json={"input": "hi", "answer_instruction": "x" * 2001}, headers=A)
        unused = http.post(
            "/v1/runs",
            json={"input": "hi", "model": "small", "tools": ["echo"], "tool_choice": ["echo"]},
            headers=A,
        ).json()
        opted_out = http.post(
            "/v1/runs", json={"input": "hi", "model": "small", "constrained": False}, headers=A
        ).json()
        bad = http.post(
            "/v1/runs", json={"input": "hi", "tools": ["echo"], "tool_choice": ["pause"]}, headers=A
        )
        unknown = http.post("/v1/runs", json={"input": "hi", "model": "huge"}, headers=A)
        specs = {run["id"]: api.spec("acme", run["id"]) for run in (plain, small, opted_out)}
    assert (plain["model"], small["model"]) == ("big", "small")
    assert (specs[plain["id"]].model, specs[plain["id"]].constrained) == ("big", False)
    assert specs[small["id"]].constrained is True and specs[small["id"]].tool_choice == ("echo", "none")
    assert specs[small["id"]].answer_turn == "<|im_start|>system\nAnswer in one sentence.<|im_end|>\n"
    assert specs[plain["id"]].answer_turn == ""
    assert wordy.status_code == 422 and "answer_instruction" in wordy.json()["error"]["message"]
    sampling = specs[small["id"]].sampling
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0.0, 1.0, 7)
    assert specs[plain["id"]].sampling.seed is None and unused["model"] == "small"
    assert specs[opted_out["id"]].constrained is False
    assert bad.status_code == 422 and "tool_choice" in bad.json()["error"]["message"]
    assert unknown.status_code == 422 and "huge" in unknown.json()["error"]["message"]


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_a_schema_nested_too_deep_is_refused_before_anything_is_stored(api: MemoryApi) -> None:
    headers = {**A, "Idempotency-Key": "deep-1"}
    deep = api.http.post("/v1/runs", json={"input": "x", "json_schema": _nested(120)}, headers=headers)
    assert deep.status_code == 422, deep.text
    error = deep.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "json_schema is nested more than 64 levels deep; the limit is 64"
    big = {"type": "object", "description": "x" * 70_000}
    too_big = api.http.post("/v1/runs", json={"input": "x", "json_schema": big}, headers=A)
    assert too_big.status_code == 422 and "the limit is 65536 bytes" in too_big.json()["error"]["message"]
    many = [{"role": "user", "content": "hi"}] * 501
    too_many = api.http.post("/v1/runs", json={"input": many}, headers=A)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"] == "input: at most 500 messages (the limit)"
    lone = b'{"input": "x", "json_schema": {"type": "string", "description": "\\ud800"}}'
    surrogate = api.http.post(
        "/v1/runs", content=lone, headers={**headers, "Content-Type": "application/json"}
    )
    assert surrogate.status_code == 422 and "surrogate" in surrogate.json()["error"]["message"]
    # Nothing was stored or queued, the run list answers, and the key stayed free for a good body.
    assert api.store.queue == [] and api.store.records == {}
    listed = api.http.get("/v1/runs", headers=A)
    assert listed.status_code == 200 and listed.json()["data"] == []
    good = api.http.post("/v1/runs", json={"input": "x", "json_schema": _nested(20)}, headers=headers)
    assert good.status_code == 202, good.text
