"""The REST API end to end: uvicorn on loopback, a real redis-server, a real worker, httpx over TCP. (Its
HTTP behaviour alone is tested over the in-memory store: ``tests/unit/test_api_http*.py``.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api_support import A
from tests.integration.conftest_api import Service, api_client, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[httpx.Client]:
    with api_client(redis_url, worker=True) as http:
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


def test_redis_down_is_a_503_in_the_envelope() -> None:
    with api_client(f"redis://127.0.0.1:{free_port()}/0", worker=False) as http:
        assert http.get("/healthz").status_code == 200
        for response in (http.get("/readyz"), http.get("/v1/runs/run_1", headers=A)):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "store_unavailable"
            assert response.headers["Retry-After"] == "1"


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
