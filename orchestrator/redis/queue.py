"""The run queue on Redis: a stream with one consumer group; a run is held by a lease renewed by heartbeats.

A worker takes new entries with ``take``; an entry whose worker stopped heartbeating (its idle time in the
group passed the lease time) is taken over with ``claim_stale``. Either way the worker must then hold the
run's lease (``start`` takes it and loads the run in one script; ``acquire`` takes it alone), which succeeds
only when no live worker holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import ResponseError
from redis.typing import EncodableT

from orchestrator.redis.client import Link
from orchestrator.redis.keys import GROUP, QUEUE, Keys
from orchestrator.redis.record import text
from orchestrator.redis.runs import Loaded, load_run

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Claim:
    """A queue entry this worker took: the run to work on, and the entry to acknowledge when done."""

    entry: str
    tenant: str
    run_id: str


class RunQueue:
    """The queue, for the worker ``link.worker``."""

    def __init__(self, link: Link, *, lease_ms: int = 5000) -> None:
        self.link = link
        self._redis = link.redis
        self.lease_ms = lease_ms

    @property
    def worker(self) -> str:
        return self.link.worker

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, count: int, block_ms: int) -> list[Claim]:
        found: Any = await self._grouped(
            lambda: self._redis.xreadgroup(GROUP, self.worker, {QUEUE: ">"}, count=count, block=block_ms)
        )
        return [_claim(entry, fields) for _, entries in found or () for entry, fields in entries]

    async def claim_stale(self, count: int) -> list[Claim]:
        reply: Any = await self._grouped(
            lambda: self._redis.xautoclaim(QUEUE, GROUP, self.worker, self.lease_ms, "0-0", count=count)
        )
        return [_claim(entry, fields) for entry, fields in reply[1] if fields]

    async def _grouped(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run a command on the consumer group; when Redis has lost the group (it restarted without
        persistence) make it again, from the stream's start, and run the command once more: runs queued
        after the restart are taken, not left waiting for a group that no longer exists."""
        try:
            return await command()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        log.warning("the run queue's consumer group is gone (Redis restarted empty?): making it again")
        await self.ensure_group()
        return await command()

    async def acquire(self, claim: Claim) -> bool:
        key = Keys.of(claim.tenant, claim.run_id).lease
        return bool(await self._redis.set(key, self.worker, nx=True, px=self.lease_ms))

    async def start(self, claim: Claim) -> Loaded | None:
        """Takes the run's lease and loads it (as ``RedisRunStore.load`` does), in one round trip; ``None``
        when a live worker holds the run. Raises as ``load`` does once the lease is taken."""
        return await load_run(self.link, claim.tenant, claim.run_id, lease_ms=self.lease_ms)

    async def heartbeat(self, claims: list[Claim]) -> tuple[list[bool], list[bool]]:
        """Renew each lease still held (and reset its entry's idle time); returns (still held, cancel
        requested). The scripts go to Redis together: one round trip for all."""
        replies = await asyncio.gather(*(self._beat(claim) for claim in claims))
        return [bool(held) for held, _ in replies], [bool(cancel) for _, cancel in replies]

    async def _beat(self, claim: Claim) -> tuple[int, int]:
        keys = Keys.of(claim.tenant, claim.run_id)
        args: list[EncodableT] = [self.worker, self.lease_ms, GROUP, claim.entry]
        held, cancel = await self.link.batch.run(
            self.link.scripts.heartbeat, [keys.lease, QUEUE, keys.cancel], args
        )
        return int(held), int(cancel)

    async def depth(self) -> int:
        """Runs queued or running: finished runs are deleted from the stream, so its length is the depth."""
        return int(await self._redis.xlen(QUEUE))

    async def done(self, claim: Claim) -> bool:
        """The run is finished (or was already): remove it from the queue and release its lease, if this
        worker still holds the lease (atomically with the check). Returns whether it did."""
        keys = [QUEUE, Keys.of(claim.tenant, claim.run_id).lease]
        return bool(
            await self.link.batch.run(self.link.scripts.done, keys, [self.worker, GROUP, claim.entry])
        )

    async def release(self, claim: Claim) -> None:
        """Give the run back without finishing it (shutting down): another worker may take it at once."""
        key = Keys.of(claim.tenant, claim.run_id).lease
        await self.link.scripts.release(keys=[key], args=[self.worker])


def _claim(entry: bytes | str, fields: dict[bytes, bytes]) -> Claim:
    return Claim(text(entry), text(fields[b"tenant"]), text(fields[b"run"]))
