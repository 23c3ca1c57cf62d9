"""A submission is one script on Redis, all or nothing: the idempotency key, the thread's existence and
claim (one run at a time per thread), the record and the queue entry. Commands are counted on the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.redis import RedisStore, connect
from tests.api_support import A
from tests.integration.conftest_api import api_client
from tests.integration.redis_monitor import received

pytestmark = pytest.mark.integration


def test_one_run_at_a_time_per_thread_and_nothing_written_when_refused(redis_url: str) -> None:
    async def main() -> None:
        client = connect(redis_url)
        store = RedisStore(client)
        claim = "cad:t:acme:thread:t1:run"

        async def submit(run_id: str, **options: Any) -> Any:
            spec = RunSpec(run_id, "acme", "t1", "")
            return await store.submit(
                spec, Checkpoint(deadline=time.time() + 60), "hi", claim=True, **options
            )

        try:
            assert (await submit("run_a", existing_thread=True)).kind == "no_thread"
            assert await client.exists(claim, "cad:t:acme:thread:t1", "cad:t:acme:run:run_a") == 0
            created = await submit("run_a")
            assert (created.kind, created.run_id, created.record.status) == ("created", "run_a", "queued")
            assert await client.ttl(claim) > 3600  # the claim lasts as long as the record
            busy = await submit("run_b", existing_thread=True)
            assert (busy.kind, busy.run_id) == ("busy", "run_a")
            assert not await client.exists("cad:t:acme:run:run_b")
            assert await client.llen("cad:t:acme:thread:t1") == 1  # B's turn was not appended
            assert await store.request_cancel("acme", "run_a") == "finished"
            assert (await submit("run_b", existing_thread=True)).kind == "created"
            assert await client.get(claim) == b"run_b"
        finally:
            await client.aclose()

    asyncio.run(main())


def test_an_idempotency_key_binds_with_the_run_it_created(redis_url: str) -> None:
    async def main() -> None:
        client = connect(redis_url)
        store = RedisStore(client)
        try:
            first = RunSpec("run_k1", "acme", "tk1", "")
            done = await store.submit(
                first, Checkpoint(deadline=time.time() + 60), "hi", idempotency=("k", "f1")
            )
            assert done.kind == "created"
            again = RunSpec("run_k2", "acme", "tk2", "")
            replay = await store.submit(
                again, Checkpoint(deadline=time.time() + 60), "hi", idempotency=("k", "f2")
            )
            assert (replay.kind, replay.run_id, replay.fingerprint) == ("replay", "run_k1", "f1")
            assert await client.exists("cad:t:acme:run:run_k2", "cad:t:acme:thread:tk2") == 0
        finally:
            await client.aclose()

    asyncio.run(main())


def test_a_submission_is_one_command_on_redis(redis_url: str) -> None:
    with api_client(redis_url, worker=False) as http:
        assert http.post("/v1/runs", json={"input": "warm up"}, headers=A).status_code == 202  # loads it
        for body, headers in [
            ({"input": "a new thread"}, A),
            ({"input": "with a key"}, A | {"Idempotency-Key": "once"}),
        ]:
            with received(redis_url) as seen:
                response = http.post("/v1/runs", json=body, headers=headers)
            assert response.status_code == 202, response.text
            assert seen.counts() == {"evalsha": 1}, (body, seen)
            assert response.json()["status"] == "queued"
        run, thread = response.json()["id"], response.json()["thread_id"]
        assert http.post(f"/v1/runs/{run}/cancel", headers=A).status_code == 200  # frees the thread
        with received(redis_url) as seen:
            follow = http.post("/v1/runs", json={"input": "and on", "thread_id": thread}, headers=A)
        assert follow.status_code == 202, follow.text
        assert seen.counts() == {"evalsha": 1}, seen


def test_a_new_response_is_one_command_and_one_that_continues_another_reads_it_first(redis_url: str) -> None:
    with api_client(redis_url, worker=False) as http:
        warm = {"input": "warm up", "background": True}
        assert http.post("/v1/responses", json=warm, headers=A).status_code == 200
        with received(redis_url) as seen:
            first = http.post("/v1/responses", json={"input": "a new one", "background": True}, headers=A)
        assert first.status_code == 200, first.text
        assert seen.counts() == {"evalsha": 1}, seen
        assert http.post(f"/v1/responses/{first.json()['id']}/cancel", headers=A).status_code == 200
        body = {"input": "and on", "background": True, "previous_response_id": first.json()["id"]}
        with received(redis_url) as seen:
            follow = http.post("/v1/responses", json=body, headers=A)
        assert follow.status_code == 200, follow.text
        # The previous response's record (one pipelined read: its hash and its lease), then the submission.
        assert seen.counts() == {"hgetall": 1, "exists": 1, "evalsha": 1}, seen
