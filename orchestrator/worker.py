"""An orchestrator worker: takes runs from the Redis queue and runs many of them concurrently.

Each run is held by a lease that a heartbeat renews; the heartbeat also relays cancellation requests to
the run and stops a run whose lease another worker took over. A worker that dies (even by SIGKILL)
stops heartbeating: once its leases lapse, other workers claim its runs and resume them from their last
committed step, replaying ledgered tool calls instead of running them again.

The worker's two loops (intake: take runs; heartbeat: renew leases, relay cancellations) are supervised:
a transient Redis error (unreachable, restarting, loading, stalled past the client's timeout) is retried
with bounded exponential backoff, and a queue whose consumer group vanished (Redis restarted without
persistence) gets it back. Any other error ends that loop, loudly, and ``check_health`` (what Serve's
health check calls) raises from then on, so that the replica is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from orchestrator.errors import (
    UNREADABLE_RUN,
    LeaseLostError,
    RunNotFoundError,
    StoreError,
    UnhealthyError,
    UnreadableRunError,
    failure_message,
)
from orchestrator.loop import Agent
from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.records import FINAL_STATUSES, StoredStatus, event_order, is_over
from orchestrator.redis import TRANSIENT, Claim, RedisRunStore, RunQueue
from orchestrator.tracing import Tracing, record_queue_depth, record_run_failed, record_takeover, trace_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Active:
    claim: Claim
    task: asyncio.Task[None]
    cancel: asyncio.Event
    lost: asyncio.Event


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter: ``first_s``, doubling up to ``max_s``; each delay is drawn
    from its upper half, so that replicas that failed together do not retry together."""

    first_s: float = 0.05
    max_s: float = 2.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.max_s, self.first_s * 2.0 ** min(max(failures - 1, 0), 30))
        return ceiling * random.uniform(0.5, 1.0)


@dataclass
class _Loop:
    """A supervised loop: its body, run again every ``every_s``; its task; the transient errors it retried
    (``faults``)."""

    name: str
    body: Callable[[], Awaitable[None]]
    every_s: float = 0.0
    task: asyncio.Task[None] | None = None
    faults: int = 0
    failures: int = field(default=0, repr=False)  # consecutive, for the backoff


class Worker:
    def __init__(
        self,
        store: RedisRunStore,
        queue: RunQueue,
        agent: Agent,
        *,
        concurrency: int = 64,
        backoff: Backoff | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._store, self._queue, self._agent = store, queue, agent
        self._tracing = tracing or Tracing()
        self._concurrency = concurrency
        self._backoff = backoff or Backoff(max_s=min(2.0, queue.lease_ms / 4000))
        self._active: dict[str, _Active] = {}
        self._loops = (
            _Loop("intake", self._fill),
            _Loop("heartbeat", self._heartbeat, every_s=queue.lease_ms / 4000),
        )
        self._halt = asyncio.Event()
        self._grouped = False  # the queue's consumer group was made (a restart without persistence loses it)
        self._stale_checked = -float("inf")
        self.finished = 0

    @property
    def running(self) -> int:
        """Runs in progress on this worker."""
        return len(self._active)

    @property
    def faults(self) -> dict[str, int]:
        """The transient store errors each of the worker's loops retried so far, by loop."""
        return {loop.name: loop.faults for loop in self._loops}

    def check_health(self) -> None:
        """Raise ``UnhealthyError`` when one of the worker's loops has ended while serving."""
        for loop in self._loops:
            if loop.task is not None and loop.task.done() and not self._halt.is_set():
                cause = None if loop.task.cancelled() else loop.task.exception()
                raise UnhealthyError(f"the worker's {loop.name} loop is dead: {cause!r}") from cause

    async def serve(self, stop: asyncio.Event) -> None:
        """Take and run runs until ``stop`` is set; then give back the runs still in progress."""
        self._halt.clear()
        for loop in self._loops:
            loop.task = asyncio.create_task(self._supervise(loop))
        try:
            await stop.wait()
        finally:
            self._halt.set()  # the loops end at their next turn (the intake's read blocks 100 ms at most)
            await asyncio.gather(*(loop.task for loop in self._loops if loop.task), return_exceptions=True)
            await self._give_back()

    async def _supervise(self, loop: _Loop) -> None:
        """Run the loop's body until halted; retry transient store errors with backoff; let any other
        error end the loop (logged here, reported by ``check_health``)."""
        while not self._halt.is_set():
            try:
                await loop.body()
            except TRANSIENT as exc:
                loop.faults += 1
                loop.failures += 1
                delay = self._backoff.delay(loop.failures)
                log.warning("%s: store unavailable (%s); retrying in %.2f s", loop.name, exc, delay)
                await _pause(self._halt, delay)
                continue
            except Exception:
                log.exception("the worker's %s loop died", loop.name)
                raise
            loop.failures = 0
            await _pause(self._halt, loop.every_s)

    async def _fill(self) -> None:
        if not self._grouped:
            await self._queue.ensure_group()  # here, so that a Redis down at start is retried too
            self._grouped = True
        room = self._concurrency - len(self._active)
        if room <= 0:
            await asyncio.sleep(0.05)
            return
        stale = await self._claim_stale(room)
        fresh = await self._queue.take(room - len(stale), block_ms=100) if len(stale) < room else []
        # Started together: a burst of runs waits for one round of Redis calls, not one per run.
        starting = [claim for claim in stale + fresh if claim.entry not in self._active]
        started = await asyncio.gather(
            *(self._start(claim, taken_over=claim in stale) for claim in starting), return_exceptions=True
        )
        for claim, outcome in zip(starting, started, strict=True):
            if isinstance(outcome, BaseException):
                await self._not_started(claim, outcome)

    async def _claim_stale(self, room: int) -> list[Claim]:
        """Runs whose worker stopped heartbeating, looked for once per heartbeat interval: a lease is not
        stale before ``lease_ms`` has passed, so a look on every intake round (one Redis round trip more
        before each take) finds nothing sooner."""
        now = time.monotonic()
        if now - self._stale_checked < self._queue.lease_ms / 4000:
            return []
        self._stale_checked = now
        return await self._queue.claim_stale(room)

    async def _not_started(self, claim: Claim, error: BaseException) -> None:
        """A claimed run that could not be started: Redis failing is retried (the loop backs off; the run's
        lease lapses and it is claimed again); a run whose record cannot be read fails alone, instead of
        taking the worker down."""
        if isinstance(error, TRANSIENT) or not isinstance(error, Exception):
            raise error  # (not an Exception: cancellation, or the process going down)
        if isinstance(error, LeaseLostError):
            return  # another worker took it between our acquire and our first write
        log.error("run %s cannot be started", claim.run_id, exc_info=error)
        record_run_failed()
        with suppress(LeaseLostError):
            await self._store.fail(claim.tenant, claim.run_id, failure_message(error))
            await self._queue.done(claim)

    async def _start(self, claim: Claim, *, taken_over: bool) -> None:
        status: StoredStatus | None
        try:
            loaded = await self._queue.start(claim)  # the lease and the run, in one round trip
            if loaded is None:
                return  # a live worker holds this run
            spec, ckpt, status = loaded
        except RunNotFoundError:
            status = None  # expired, or lost with a Redis that restarted empty
        except UnreadableRunError as exc:  # it can never run: it fails alone, and the worker goes on
            log.error("run %s of tenant %s cannot be loaded: %s", claim.run_id, claim.tenant, exc)
            if exc.status not in FINAL_STATUSES:
                record_run_failed()
                await self._fail(claim, UNREADABLE_RUN)
                return
            status = "failed"
        if is_over(status):
            await self._queue.done(claim)
            return
        if taken_over:
            record_takeover()
            data = {"worker": self._store.worker, "step": ckpt.step, "trace_id": trace_id(ckpt.trace)}
            await self._store.emit(spec, "resumed", data)
        elif ckpt.step == 0:
            # A new run's wait, from its queue entry's id (the Redis time it was queued, in ms) to now.
            queued_ms = event_order(claim.entry)[0]
            self._tracing.queued(spec.run_id, spec.thread_id, ckpt.trace, queued_ms / 1000)
        cancel, lost = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(self._run(claim, spec, ckpt, cancel, lost))
        self._active[claim.entry] = _Active(claim, task, cancel, lost)

    async def _run(
        self, claim: Claim, spec: RunSpec, ckpt: Checkpoint, cancel: asyncio.Event, lost: asyncio.Event
    ) -> None:
        try:
            await self._agent.run(spec, ckpt, cancel, lost=lost)
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
            await self._fail(claim, failure_message(exc))  # the details stay in the log above
        finally:
            self._active.pop(claim.entry, None)

    async def _fail(self, claim: Claim, error: str) -> None:
        try:
            await self._store.fail(claim.tenant, claim.run_id, error)
            await self._queue.done(claim)
        except LeaseLostError:
            log.info("run %s: lease lost; not marked failed here", claim.run_id)
        except StoreError:
            log.warning("run %s: store error while marking it failed", claim.run_id, exc_info=True)

    async def _heartbeat(self) -> None:
        active = list(self._active.values())
        if active:
            held, cancelled = await self._queue.heartbeat([one.claim for one in active])
            for one, is_held, is_cancelled in zip(active, held, cancelled, strict=True):
                if not is_held:
                    one.lost.set()  # another worker owns the run now; our view of it is stale
                elif is_cancelled:
                    one.cancel.set()
        record_queue_depth(await self._queue.depth())

    async def _give_back(self) -> None:
        active = list(self._active.values())
        for one in active:
            one.lost.set()  # the run stops at its next step boundary even if it swallows the cancellation
            one.task.cancel()
        await asyncio.gather(*(one.task for one in active), return_exceptions=True)
        for one in active:
            with suppress(*TRANSIENT):
                await self._queue.release(one.claim)


async def _pause(halt: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``halt`` is set meanwhile."""
    with suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await halt.wait()
