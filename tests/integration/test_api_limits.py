"""What one tenant sends cannot break the service for others: bounded input, records that read back, and a
stored run that cannot be read fails alone (the worker goes on, the run list still answers)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from pydantic import TypeAdapter

from orchestrator.errors import UNREADABLE_RUN, UnreadableRunError
from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.redis import QUEUE, RedisStore, connect
from tests.api_support import A
from tests.integration.conftest_api import api_client, sse, wait_for

pytestmark = pytest.mark.integration


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


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
