"""The REST API end to end: uvicorn on loopback, a real redis-server, a real worker, httpx over TCP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.integration.conftest_api import A, B, Service, api_client, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[httpx.Client]:
    with api_client(redis_url, worker=True) as http:
        yield http


@pytest.fixture
def idle(redis_url: str) -> Iterator[httpx.Client]:
    """The API with no worker behind it: runs stay queued."""
    with api_client(redis_url, worker=False) as http:
        yield http


def test_a_submitted_run_is_completed_by_a_worker(client: httpx.Client) -> None:
    created = client.post("/v1/runs", json={"input": "tool hello", "tools": ["echo"]}, headers=A)
    assert created.status_code == 202
    run = created.json()
    assert created.headers["Location"] == f"/v1/runs/{run['id']}"
    assert run["status"] in ("queued", "in_progress")
    done = wait_for(client, run["id"], "completed")
    assert done["output"] == "echo: tool hello"
    assert done["stop_reason"] == "answer"
    assert done["steps"] == 2
    assert done["usage"]["total_tokens"] > 0
    messages = client.get(f"/v1/threads/{run['thread_id']}/messages", headers=A).json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[0]["content"] == "tool hello"


def test_a_thread_continues_with_its_memory(client: httpx.Client) -> None:
    first = client.post("/v1/runs", json={"input": "one"}, headers=A).json()
    wait_for(client, first["id"], "completed")
    body = {"input": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two"}]}
    second = client.post("/v1/runs", json={**body, "thread_id": first["thread_id"]}, headers=A).json()
    assert wait_for(client, second["id"], "completed")["output"] == "echo: two"
    messages = client.get(f"/v1/threads/{first['thread_id']}/messages", headers=A).json()["data"]
    assert [m["content"] for m in messages] == ["one", "echo: one", "two", "echo: two"]


def test_keys_are_required_and_checked(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic a2V5LWE="}):
        response = client.post("/v1/runs", json={"input": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/tools").status_code == 401
    assert [t["name"] for t in client.get("/v1/tools", headers=A).json()["data"]] == ["echo", "pause"]


def test_another_tenant_gets_404_for_everything(client: httpx.Client) -> None:
    run = client.post("/v1/runs", json={"input": "mine"}, headers=A).json()
    wait_for(client, run["id"], "completed")
    for method, path in [
        ("GET", f"/v1/runs/{run['id']}"),
        ("GET", f"/v1/runs/{run['id']}/events"),
        ("POST", f"/v1/runs/{run['id']}/cancel"),
        ("GET", f"/v1/threads/{run['thread_id']}/messages"),
    ]:
        response = client.request(method, path, headers=B)
        assert response.status_code == 404, path
        assert response.json()["error"]["type"] == "not_found_error"
    other = client.post("/v1/runs", json={"input": "x", "thread_id": run["thread_id"]}, headers=B)
    assert other.status_code == 404
    assert wait_for(client, run["id"], "completed")["output"] == "echo: mine"


def test_idempotency_key_gives_one_run_and_refuses_a_different_body(idle: httpx.Client) -> None:
    headers = {**A, "Idempotency-Key": "abc-1"}
    first = idle.post("/v1/runs", json={"input": "once"}, headers=headers)
    again = idle.post("/v1/runs", json={"input": "once"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    conflict = idle.post("/v1/runs", json={"input": "twice"}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    # Keys are per tenant: the same key from another tenant is another run.
    assert (
        idle.post("/v1/runs", json={"input": "once"}, headers={**B, "Idempotency-Key": "abc-1"}).json()["id"]
        != first.json()["id"]
    )


def test_errors_come_in_one_envelope(redis_url: str) -> None:
    with api_client(redis_url, worker=False, max_body_bytes=2000) as http:
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
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert set(error) == {"type", "code", "message"}
            assert "Traceback" not in error["message"]
        assert "limits.max_steps" in cases[3][0].json()["error"]["message"]
        assert "tools" in cases[4][0].json()["error"]["message"]


def test_cancel_a_queued_run(idle: httpx.Client) -> None:
    run = idle.post("/v1/runs", json={"input": "never"}, headers=A).json()
    cancelled = idle.post(f"/v1/runs/{run['id']}/cancel", headers=A)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["stop_reason"] == "cancelled"


def test_cancel_a_run_in_progress(client: httpx.Client) -> None:
    body = {"input": "slow", "tools": ["pause"], "limits": {"max_steps": 1000}}
    run = client.post("/v1/runs", json=body, headers=A).json()
    # A run is in progress from the moment a worker takes it; it is cancelled here once a step is committed
    # (cancelled before that, it would rightly end with no step).
    while wait_for(client, run["id"], "in_progress")["steps"] < 1:
        time.sleep(0.05)
    assert client.post(f"/v1/runs/{run['id']}/cancel", headers=A).status_code == 200
    done = wait_for(client, run["id"], "cancelled")
    assert done["stop_reason"] == "cancelled"
    assert done["steps"] >= 1


def test_rate_limit_answers_429_with_retry_after(redis_url: str) -> None:
    with api_client(redis_url, worker=False, rate_per_s=0.5, burst=3) as http:
        statuses = [http.get("/v1/tools", headers=A).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = http.get("/v1/tools", headers=A)
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert int(limited.headers["Retry-After"]) >= 1
        assert http.get("/v1/tools", headers=B).status_code == 200  # per key


def test_health_and_readiness(idle: httpx.Client) -> None:
    assert idle.get("/healthz").json() == {"status": "ok"}
    assert idle.get("/readyz").status_code == 200
    assert "/v1/runs" in idle.get("/openapi.json").json()["paths"]


def test_redis_down_is_a_503_in_the_envelope() -> None:
    with api_client(f"redis://127.0.0.1:{free_port()}/0", worker=False) as http:
        assert http.get("/healthz").status_code == 200
        for response in (http.get("/readyz"), http.get("/v1/runs/run_1", headers=A)):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "store_unavailable"
            assert response.headers["Retry-After"] == "1"


def test_a_chunked_body_over_the_cap_is_cut_off_with_413(redis_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    with api_client(redis_url, worker=False, max_body_bytes=2000) as http:
        response = http.post("/v1/runs", content=chunks(), headers={**A, "Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"


def test_a_conversation_must_end_with_the_user_and_schemas_must_be_schemas(idle: httpx.Client) -> None:
    talk = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    response = idle.post("/v1/runs", json={"input": talk}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("input:")
    response = idle.post("/v1/runs", json={"input": "x", "json_schema": {"type": 12}}, headers=A)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("json_schema:")


def test_a_thread_takes_one_run_at_a_time(idle: httpx.Client) -> None:
    first = idle.post("/v1/runs", json={"input": "one"}, headers=A).json()
    again = idle.post("/v1/runs", json={"input": "two", "thread_id": first["thread_id"]}, headers=A)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "thread_busy"
    idle.post(f"/v1/runs/{first['id']}/cancel", headers=A)
    assert (
        idle.post("/v1/runs", json={"input": "two", "thread_id": first["thread_id"]}, headers=A).status_code
        == 202
    )


def test_an_idempotency_key_whose_request_failed_stays_free(idle: httpx.Client) -> None:
    first = idle.post("/v1/runs", json={"input": "one"}, headers=A).json()
    body = {"input": "two", "thread_id": first["thread_id"]}
    headers = {**A, "Idempotency-Key": "k-busy"}
    assert idle.post("/v1/runs", json=body, headers=headers).status_code == 409  # the thread is busy
    idle.post(f"/v1/runs/{first['id']}/cancel", headers=A)
    assert idle.post("/v1/runs", json=body, headers=headers).status_code == 202


def test_model_constrained_and_tool_choice_reach_the_run_spec(redis_url: str) -> None:
    with api_client(redis_url, worker=False, models=("big", "small"), constrained_models=("small",)) as http:
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
    assert (plain["model"], small["model"]) == ("big", "small")
    specs = {run["id"]: _spec(redis_url, run["id"]) for run in (plain, small, opted_out)}
    assert (specs[plain["id"]]["model"], specs[plain["id"]]["constrained"]) == ("big", False)
    assert specs[small["id"]]["constrained"] is True and specs[small["id"]]["tool_choice"] == ["echo", "none"]
    assert specs[small["id"]]["answer_turn"] == "<|im_start|>system\nAnswer in one sentence.<|im_end|>\n"
    assert specs[plain["id"]]["answer_turn"] == ""
    assert wordy.status_code == 422 and "answer_instruction" in wordy.json()["error"]["message"]
    assert specs[small["id"]]["sampling"] == {"temperature": 0.0, "top_p": 1.0, "seed": 7}
    assert specs[plain["id"]]["sampling"]["seed"] is None and unused["model"] == "small"
    assert specs[opted_out["id"]]["constrained"] is False
    assert bad.status_code == 422 and "tool_choice" in bad.json()["error"]["message"]
    assert unknown.status_code == 422 and "huge" in unknown.json()["error"]["message"]


def _spec(redis_url: str, run_id: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.hget(f"cad:t:acme:run:{run_id}", "spec")
        assert isinstance(raw, bytes)
        spec: dict[str, Any] = json.loads(raw)
        return spec
    finally:
        client.close()


def test_a_burst_of_submissions_queues_for_redis_connections_instead_of_failing(redis_url: str) -> None:
    async def burst(url: str) -> set[int]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(base_url=url, headers=A, limits=limits, timeout=60) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/runs", json={"input": "hi"}) for _ in range(200))
            )
        return {response.status_code for response in responses}

    # More concurrent requests than the API's Redis connections (64): they wait their turn, none is a 503.
    with Service(redis_url, worker=False, rate_per_s=10_000, burst=10_000).running() as service:
        assert asyncio.run(burst(service.url)) == {202}
