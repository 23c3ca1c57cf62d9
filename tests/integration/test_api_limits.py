"""What one tenant sends cannot break the service for others: bounded input, records that read back, and a
stored run that cannot be read fails alone (the worker goes on, the run list still answers)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import TypeAdapter

from orchestrator.errors import UNREADABLE_RUN, UnreadableRunError
from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.redis import QUEUE, RedisStore, connect
from tests.integration.conftest_api import A, api_client, sse, wait_for

pytestmark = pytest.mark.integration


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.fixture
def idle(redis_url: str) -> Iterator[httpx.Client]:
    with api_client(redis_url, worker=False) as http:
        yield http


def test_a_schema_nested_too_deep_is_refused_before_anything_is_stored(
    idle: httpx.Client, redis_url: str
) -> None:
    headers = {**A, "Idempotency-Key": "deep-1"}
    deep = idle.post("/v1/runs", json={"input": "x", "json_schema": _nested(120)}, headers=headers)
    assert deep.status_code == 422, deep.text
    error = deep.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"] == "json_schema is nested more than 64 levels deep; the limit is 64"
    big = {"type": "object", "description": "x" * 70_000}
    too_big = idle.post("/v1/runs", json={"input": "x", "json_schema": big}, headers=A)
    assert too_big.status_code == 422 and "the limit is 65536 bytes" in too_big.json()["error"]["message"]
    many = [{"role": "user", "content": "hi"}] * 501
    too_many = idle.post("/v1/runs", json={"input": many}, headers=A)
    assert too_many.status_code == 422
    assert too_many.json()["error"]["message"] == "input: at most 500 messages (the limit)"
    lone = b'{"input": "x", "json_schema": {"type": "string", "description": "\\ud800"}}'
    surrogate = idle.post("/v1/runs", content=lone, headers={**headers, "Content-Type": "application/json"})
    assert surrogate.status_code == 422 and "surrogate" in surrogate.json()["error"]["message"]
    # Nothing was stored or queued, the run list answers, and the key stayed free for a good body.
    raw = redis.Redis.from_url(redis_url)
    try:
        assert raw.xlen(QUEUE) == 0
    finally:
        raw.close()
    listed = idle.get("/v1/runs", headers=A)
    assert listed.status_code == 200 and listed.json()["data"] == []
    good = idle.post("/v1/runs", json={"input": "x", "json_schema": _nested(20)}, headers=headers)
    assert good.status_code == 202, good.text


def test_the_store_refuses_to_write_a_spec_that_would_not_read_back(redis_url: str) -> None:
    async def main() -> None:
        client = connect(redis_url)
        store = RedisStore(client)
        spec = RunSpec("run_deep", "acme", "thread_deep", "", json_schema=_nested(120))
        try:
            with pytest.raises(UnreadableRunError, match="would not read back"):
                await store.submit(spec, Checkpoint(deadline=time.time() + 60), "hi")
            assert await client.keys("*") == []
        finally:
            await client.aclose()

    asyncio.run(main())


def _store_unreadable_run(redis_url: str, run_id: str) -> None:
    """A run as a version of the API without the checks stored it: its spec is valid but nested past what
    pydantic's JSON reader takes, so it cannot be read back."""
    spec = RunSpec(run_id, "acme", "thread_broken", "", json_schema=_nested(120))
    now = time.time()
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.hset(
            f"cad:t:acme:run:{run_id}",
            mapping={
                "spec": TypeAdapter(RunSpec).dump_json(spec),
                "created_at": repr(now),
                "status": "queued",
                "step": 0,
                "window_start": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "json_retries": 0,
                "deadline": repr(now + 600),
                "trace": "{}",
                "model": "hermes-3-3b",
            },
        )
        raw.zadd("cad:t:acme:runs", {run_id: now})
        raw.xadd(QUEUE, {"tenant": "acme", "run": run_id})
    finally:
        raw.close()


def test_a_stored_run_that_cannot_be_read_fails_alone(redis_url: str) -> None:
    _store_unreadable_run(redis_url, "run_broken")
    with api_client(redis_url, worker=True) as client:
        listed = client.get("/v1/runs", headers=A)
        assert listed.status_code == 200, listed.text
        [shown] = listed.json()["data"]
        assert (shown["id"], shown["status"], shown["thread_id"]) == ("run_broken", "failed", "thread_broken")
        assert shown["error"] == UNREADABLE_RUN
        failed = wait_for(client, "run_broken", "failed")
        assert failed["error"] == UNREADABLE_RUN
        with client.stream("GET", "/v1/runs/run_broken/events", headers=A) as response:
            frames = list(sse(response))
        assert [frame["event"] for frame in frames] == ["failed"]
        assert json.loads(frames[0]["data"])["error"] == UNREADABLE_RUN
        # The worker went on: the next run completes.
        run = client.post("/v1/runs", json={"input": "after"}, headers=A).json()
        assert wait_for(client, run["id"], "completed")["output"] == "echo: after"
