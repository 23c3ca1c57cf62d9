"""An orchestrator worker: takes runs from the Redis queue and runs many of them concurrently.

Each run is held by a lease that a heartbeat renews; the heartbeat also relays cancellation requests to
the run and stops a run whose lease another worker took over. A worker that dies (even by SIGKILL)
stops heartbeating: once its leases lapse, other workers claim its runs and resume them from their last
committed step, replaying ledgered tool calls instead of running them again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from orchestrator.errors import (
    LeaseLostError,
    RunNotFoundError,
    StoreError,
    UnreadableRunError,
    failure_message,
)
from orchestrator.loop import Agent
from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.redis_store import Claim, RedisStore, RunQueue
from orchestrator.tracing import record_queue_depth, record_run_failed, record_takeover

log = logging.getLogger(__name__)


@dataclass
class _Active:
    claim: Claim
    task: asyncio.Task[None]
    cancel: asyncio.Event


class Worker:
    def __init__(self, store: RedisStore, queue: RunQueue, agent: Agent, *, concurrency: int = 64) -> None:
        self._store, self._queue, self._agent = store, queue, agent
        self._concurrency = concurrency
        self._active: dict[str, _Active] = {}
        self.finished = 0

    async def serve(self, stop: asyncio.Event) -> None:
        """Take and run runs until ``stop`` is set; then give back the runs still in progress."""
        await self._queue.ensure_group()
        heartbeat = asyncio.create_task(self._heartbeats())
        try:
            while not stop.is_set():
                await self._fill()
        finally:
            heartbeat.cancel()
            await self._give_back()

    async def _fill(self) -> None:
        room = self._concurrency - len(self._active)
        if room <= 0:
            await asyncio.sleep(0.05)
            return
        stale = await self._queue.claim_stale(room)
        fresh = await self._queue.take(room - len(stale), block_ms=100) if len(stale) < room else []
        # Started together: a burst of runs waits for one round of Redis calls, not one per run.
        starting = [claim for claim in stale + fresh if claim.entry not in self._active]
        await asyncio.gather(*(self._start(claim, taken_over=claim in stale) for claim in starting))

    async def _start(self, claim: Claim, *, taken_over: bool) -> None:
        if not await self._queue.acquire(claim):
            return  # a live worker holds this run
        try:
            spec, ckpt, status = await self._store.load(claim.tenant, claim.run_id)
        except RunNotFoundError:
            status = "missing"
        except UnreadableRunError as exc:  # it can never run: it fails alone, and the worker goes on
            log.error("run %s of tenant %s cannot be loaded: %s", claim.run_id, claim.tenant, exc)
            if exc.status not in ("finished", "failed"):
                record_run_failed()
                await self._store.fail_unreadable(claim.tenant, claim.run_id)
            status = "failed"
        if status in ("finished", "failed", "missing"):
            await self._queue.done(claim)
            return
        if taken_over:
            record_takeover()
            await self._store.emit(spec, "resumed", {"worker": self._store.worker, "step": ckpt.step})
        cancel = asyncio.Event()
        task = asyncio.create_task(self._run(claim, spec, ckpt, cancel))
        self._active[claim.entry] = _Active(claim, task, cancel)

    async def _run(self, claim: Claim, spec: RunSpec, ckpt: Checkpoint, cancel: asyncio.Event) -> None:
        try:
            await self._agent.run(spec, ckpt, cancel)
            await self._queue.done(claim)
            self.finished += 1
        except LeaseLostError:
            log.info("run %s: lease lost; another worker continues it", spec.run_id)
        except StoreError:
            # Redis failed under us: leave the run queued; once its lease lapses, a worker resumes it.
            log.warning("run %s: store error; left for a retry", spec.run_id, exc_info=True)
        except Exception as exc:
            # Our fault or the infrastructure's, not the model's: record it, so the run does not loop.
            log.exception("run %s failed", spec.run_id)
            record_run_failed()
            await self._store.fail(spec, failure_message(exc))  # the details stay in the log above
            await self._queue.done(claim)
        finally:
            self._active.pop(claim.entry, None)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._queue.lease_ms / 4000)
            record_queue_depth(await self._queue.depth())
            active = list(self._active.values())
            if not active:
                continue
            held, cancelled = await self._queue.heartbeat([one.claim for one in active])
            for one, is_held, is_cancelled in zip(active, held, cancelled, strict=True):
                if not is_held:
                    one.task.cancel()  # another worker owns the run now; our view of it is stale
                elif is_cancelled:
                    one.cancel.set()

    async def _give_back(self) -> None:
        active = list(self._active.values())
        for one in active:
            one.task.cancel()
        await asyncio.gather(*(one.task for one in active), return_exceptions=True)
        for one in active:
            await self._queue.release(one.claim)
