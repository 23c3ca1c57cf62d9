"""One run at a time per thread, also while the first run's record is still being written."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.redis_store import CLAIM_PENDING_S, RedisStore, connect

pytestmark = pytest.mark.integration


def test_a_run_whose_record_is_not_written_yet_holds_its_thread(redis_url: str) -> None:
    async def main() -> None:
        client = connect(redis_url)
        store = RedisStore(client)
        key = "cad:t:acme:thread:t1:run"
        try:
            # Run A claimed the thread; its record is not written yet (its submission is under way).
            assert await store.claim_thread("acme", "t1", "run_a") is None
            assert 0 < await client.ttl(key) <= CLAIM_PENDING_S
            assert await store.claim_thread("acme", "t1", "run_b") == "run_a"
            # A's submission failed: it gives the thread back, and B takes it.
            await store.release_thread("acme", "t1", "run_a")
            assert await store.claim_thread("acme", "t1", "run_b") is None
            await store.release_thread("acme", "t1", "run_a")  # not A's any more: nothing happens
            assert await store.claim_thread("acme", "t1", "run_c") == "run_b"
            # B's record is written: its claim lasts as long as the record, and holds while B is queued.
            spec = RunSpec("run_b", "acme", "t1", "")
            await store.submit(spec, Checkpoint(deadline=time.time() + 60), "hi", claimed=True)
            assert await client.ttl(key) > CLAIM_PENDING_S
            assert await store.claim_thread("acme", "t1", "run_c") == "run_b"
            assert await store.request_cancel("acme", "run_b") == "finished"
            assert await store.claim_thread("acme", "t1", "run_c") is None
        finally:
            await client.aclose()

    asyncio.run(main())
