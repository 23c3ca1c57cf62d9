"""What the chaos campaign counts once a phase's runs are over (read from Redis and the scratch dirs).

Per run (``Tally`` sums them):

- ``completed``: the run finished with the model's answer.
- ``lost``: the run's steps are not exactly 0..steps, each acknowledged once, or its thread is not exactly
  the user's turn plus one assistant and one tool turn per step plus the answer.
- ``duplicate_effects``: (run, step) pairs whose tool effect happened more than once.
- ``dangling_calls``: in a run in a final state (finished or failed), each tool-call ledger entry still
  ``started`` (begun, never ended: nobody will ever end it); each (run, step) whose effect happened but
  whose call has no ledger entry at all (a call ran that the ledger never saw); each (run, step) whose
  ledger entry is a successful result while its effect never happened (the ledger claims an effect that
  did not happen). A call that ended in an error (killed mid-call, interrupted by a take-over) says that
  its effect is unknown, which is true either way: it is counted in ``tool_errors``, not here.
- ``stuck``: the run was not in a final state when the phase's deadline passed (its own deadline plus a
  grace period); ``late``: it reached its final state after its own deadline.
- ``event_anomalies``: a run whose event stream has no final event, more than one, or a step twice.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from redis.asyncio import Redis

from orchestrator.calls import digest
from orchestrator.ports import conversation_key
from orchestrator.records import FINAL_STATUSES
from orchestrator.redis import Keys
from toolbox.protocol import ToolCall

FINAL: frozenset[str] = frozenset(FINAL_STATUSES)


@dataclass
class Tally:
    runs: int = 0
    completed: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    dangling_calls: int = 0
    stuck: int = 0
    late: int = 0
    tool_errors: int = 0
    resumed: int = 0
    event_anomalies: int = 0

    def add(self, other: Tally) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def effects(scratch: Path, tenant: str, thread: str) -> Counter[int]:
    """How many times each step's effect happened in a run (its conversation's scratch directory)."""
    directory = scratch / conversation_key(tenant, thread)
    names = [path.name for path in directory.glob("effect.*")] if directory.is_dir() else []
    return Counter(int(name.split(".")[2]) for name in names)


async def check_run(redis: Redis, tenant: str, ids: tuple[str, str], steps: int, scratch: Path) -> Tally:
    """The counts of one run (``ids``: the run's and its thread's)."""
    run, thread = ids
    keys = Keys.of(tenant, run, thread)
    record = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.run)).items() if k != b"spec"}
    final = record.get("status") in FINAL
    tally = Tally(runs=1, completed=record.get("stop_reason") == "answer", stuck=not final)
    tally.late = final and float(record.get("finished_at", "inf")) > float(record["deadline"])
    records = [json.loads(r) for r in await redis.lrange(keys.steps, 0, -1)]
    turns = await redis.llen(keys.thread)
    tally.lost = [r["step"] for r in records] != list(range(steps + 1)) or turns != 2 + 2 * steps
    done = effects(scratch, tenant, thread)
    tally.duplicate_effects = sum(count > 1 for count in done.values())
    ledger = {k.decode(): v for k, v in (await redis.hgetall(keys.ledger)).items()}
    if final:
        tally.dangling_calls = _dangling(ledger, run, steps, done)
    if (tally.dangling_calls or tally.lost) and os.environ.get("CHAOS_DEBUG"):  # what went wrong, in full
        print(run, dict(done), ledger, record, records, await redis.lrange(keys.thread, 0, -1))
    tally.tool_errors = sum(b'"error":{' in value for value in ledger.values())
    await _events(redis, keys.events, tally)
    return tally


def _dangling(ledger: dict[str, bytes], run: str, steps: int, done: Counter[int]) -> int:
    entries = {key: value for key, value in ledger.items() if "@" not in key}  # not the position fields
    dangling = sum(value.startswith(b'{"state":"started"') for value in entries.values())
    for n in range(steps):
        entry = entries.get(f"{n}:{digest(ToolCall('', 'effect', {'run': run, 'n': n}))}:0")
        if entry is None:
            dangling += done[n] > 0  # an effect the ledger never saw
        elif _succeeded(entry):
            dangling += done[n] == 0  # a result claiming an effect that never happened
    return dangling


def _succeeded(entry: bytes) -> bool:
    value = json.loads(entry)
    return bool(value.get("kind") == "tool_result" and value.get("error") is None)


async def _events(redis: Redis, key: str, tally: Tally) -> None:
    kinds: Counter[str] = Counter()
    steps: Counter[int] = Counter()
    for _, event in await redis.xrange(key):
        kind = event[b"kind"].decode()
        kinds[kind] += 1
        if kind == "step":
            steps[json.loads(event[b"data"])["step"]] += 1
        tally.resumed += kind == "resumed"
    final = kinds["finished"] + kinds["failed"]
    tally.event_anomalies = (not tally.stuck and final != 1) or any(n > 1 for n in steps.values())


async def stream_ids(redis: Redis, tenant: str, run: str) -> list[str]:
    return [entry.decode() for entry, _ in await redis.xrange(Keys.of(tenant, run).events)]
