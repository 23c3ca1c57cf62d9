"""A run as its worker sees it in Redis: loading it, and every write it makes (the ``RunStore`` port).

Every write a worker makes for a run (``commit``, ``finish``, ``fail``, ``begin_call``, ``end_call``,
``emit``, and the queue's ``done`` and heartbeat) is a Lua script that first checks that this worker still
holds the run's lease (a fencing check, atomic with the write): a worker that lost its lease can never
write over the worker that took the run over, mark its run failed or remove its queue entry. ``commit``
also checks the step number, so a step is acknowledged once.

A step costs O(1) writes whatever the history length: its new turns, one step record, one event per step
and per call, a few counters, TTL refreshes. Every key of a run and its thread expires ``ttl_s`` after its
last write.

The tool-call ledger is keyed by what was called, not only where: a step sampled again after a take-over
replays a ledgered result only to the identical call (same name and canonical arguments); a different call
runs as a new entry, and the call it replaced at that position is reported (a ``call_superseded`` event).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from redis.typing import EncodableT

from orchestrator.errors import LeaseLostError, RunNotFoundError, StoreError
from orchestrator.ports import (
    CallSlot,
    Checkpoint,
    EventKind,
    Interrupted,
    Outcome,
    RunSpec,
    StepCommit,
)
from orchestrator.records import StoredStatus, call_data, decode_spec, finished_data, result_data
from orchestrator.redis import record as fields
from orchestrator.redis.client import Link
from orchestrator.redis.keys import Keys, thread_key, thread_prefix
from toolbox.protocol import ToolCall, ToolResult, from_json, to_json

EVENTS_MAXLEN = 10_000
_STARTED = b'{"state":"started"'  # how a ledger entry of a call that never finished begins
#: What a worker starts a run from: its spec, its last checkpoint and its stored status.
Loaded = tuple[RunSpec, Checkpoint, StoredStatus]


class RedisRunStore:
    """The ``RunStore`` on Redis, for the worker ``link.worker`` (its writes are fenced by the run's
    lease), with ``load`` (a run's spec and checkpoint) and ``fail``."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._batch, self._scripts = link.batch, link.scripts  # every write: no lookup more than needed

    @property
    def worker(self) -> str:
        return self.link.worker

    async def load(self, tenant: str, run_id: str) -> Loaded:
        """The run's spec, its last checkpoint, and its status (one round trip)."""
        loaded = await load_run(self.link, tenant, run_id)
        assert loaded is not None  # without a worker id, no lease is asked for
        return loaded

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        keys = Keys.of(spec.tenant, spec.run_id, spec.thread_id)
        pairs = [str(part) for key, count in step.repeats.items() for part in (key, count)]
        args: list[EncodableT] = [
            self.link.worker,
            step.step,
            step.window_start,
            step.prompt_tokens,
            step.completion_tokens,
            step.json_retries,
            json.dumps(step.record, separators=(",", ":")),
            self.link.ttl_s,
            EVENTS_MAXLEN,
            len(step.turns),
            *(_ending(step.outcome) if step.outcome is not None else ("", "")),
            *step.turns,
            *pairs,
        ]
        done = await self._batch.run(self._scripts.commit, keys.for_commit(), args)
        if done == 0:
            raise LeaseLostError(f"run {spec.run_id}: lease lost before step {step.step} was committed")
        if done == -1:
            raise StoreError(f"run {spec.run_id}: step {step.step} is not the next step to commit")

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        keys = Keys.of(spec.tenant, spec.run_id)
        data = call_data(slot, call)
        started = {"state": "started", "name": call.name, "index": slot.index}
        args: list[EncodableT] = [
            self.link.worker,
            slot.entry,
            slot.position,
            _compact(started),
            self.link.ttl_s,
            _compact(data | {"arguments": call.arguments}),
            EVENTS_MAXLEN,
            _compact({"step": slot.step, "text": delta}) if delta else "",
        ]
        reply = await self._batch.run(self._scripts.begin_call, [keys.ledger, keys.events, keys.lease], args)
        if reply[0] == b"lost":
            raise LeaseLostError(f"run {spec.run_id}: lease lost before call {slot.entry} began")
        if reply[0] == b"new":
            return None
        if reply[1].startswith(_STARTED):
            return Interrupted(call)
        return _replayed(spec, slot, call, reply[1])

    async def end_call(self, spec: RunSpec, slot: CallSlot, result: ToolResult) -> None:
        keys = Keys.of(spec.tenant, spec.run_id)
        data = result_data(slot, result)
        args: list[EncodableT] = [
            self.link.worker,
            slot.entry,
            to_json(result),
            json.dumps(data),
            EVENTS_MAXLEN,
        ]
        if not await self._batch.run(self._scripts.end_call, [keys.ledger, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before call {slot.entry} ended")

    async def emit(self, spec: RunSpec, kind: EventKind, data: dict[str, Any]) -> None:
        keys = Keys.of(spec.tenant, spec.run_id)
        args: list[EncodableT] = [self.link.worker, kind, _compact(data), EVENTS_MAXLEN]
        if not await self._batch.run(self._scripts.emit, [keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before its {kind} event")

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        """Record the run's end (a no-op when its last step's commit recorded it already)."""
        keys = Keys.of(spec.tenant, spec.run_id)
        ending, data = _ending(outcome)
        args: list[EncodableT] = [self.link.worker, ending, data, EVENTS_MAXLEN, self.link.ttl_s]
        if not await self._batch.run(self._scripts.finish, [keys.run, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before it finished")

    async def fail(self, tenant: str, run_id: str, error: str) -> None:
        """Record that the run failed through no fault of the model's (fenced by the lease like every
        write of a worker: a worker that lost the run cannot mark it failed)."""
        keys = Keys.of(tenant, run_id)
        data = _compact({"error": error})
        args: list[EncodableT] = [
            self.link.worker,
            error,
            repr(time.time()),
            data,
            EVENTS_MAXLEN,
            self.link.ttl_s,
        ]
        if not await self._batch.run(self._scripts.fail, [keys.run, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {run_id}: lease lost before it was marked failed")


async def load_run(link: Link, tenant: str, run_id: str, *, lease_ms: int = 0) -> Loaded | None:
    """Takes the run's lease for ``link.worker`` when ``lease_ms`` is given (else reads without it) and
    loads the run, in one script; ``None`` when another worker holds the lease. Raises
    ``RunNotFoundError`` when there is no such run, ``UnreadableRunError`` when it cannot be read."""
    keys = Keys.of(tenant, run_id)
    worker = link.worker if lease_ms else ""
    args: list[EncodableT] = [worker, lease_ms, thread_prefix(tenant)]
    reply = await link.batch.run(link.scripts.start, [keys.lease, keys.run, keys.repeats], args)
    if not reply[0]:
        return None
    flat, turns, repeats, named = reply[1], reply[2], reply[3], reply[4]
    found = {fields.text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
    if fields.SPEC not in found:
        raise RunNotFoundError(f"no run {run_id!r} for tenant {tenant!r}")
    record = fields.decode(found, run_id)
    spec = decode_spec(found[fields.SPEC], run_id, record.status)
    if not named:  # a record written before records named their thread: read it now
        turns = await link.redis.lrange(thread_key(tenant, spec.thread_id), record.window_start, -1)
    counts = {fields.text(repeats[i]): int(repeats[i + 1]) for i in range(0, len(repeats), 2)}
    return spec, record.checkpoint([fields.text(turn) for turn in turns], counts), record.status


def _ending(outcome: Outcome) -> tuple[str, str]:
    """A finished run's record fields (JSON) and its ``finished`` event's data."""
    return json.dumps(fields.ending(outcome, time.time())), json.dumps(finished_data(outcome))


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _replayed(spec: RunSpec, slot: CallSlot, call: ToolCall, entry: bytes) -> ToolResult:
    """The ledgered result of the same call, now answering this call (its id: the call may stand at
    another index than when it ran)."""
    result = from_json(entry)
    if not isinstance(result, ToolResult) or result.name != call.name:
        raise StoreError(f"run {spec.run_id}: ledger entry {slot.entry} is not a result of {call.name!r}")
    return dataclasses.replace(result, call_id=call.id)
