"""The run store in this process's memory: for tests, benchmarks and single-process use.

``MemoryStore`` is a ``RunStore`` (the loop's port) and an ``ApiStore`` (the REST API's,
``orchestrator.store_ports``), and keeps what the Redis store keeps: threads' turns, run records, step
records, events, the tool-call ledger, the tenant's run index, thread claims, idempotency bindings and a
queue of runs (a list: nothing here takes runs from it). It means what the Redis store means: a submission
is all or nothing, replays an idempotency key bound already, refuses an unknown thread or a busy one;
another tenant's ids are never found; runs list newest first; event ids (``{ms}-{seq}``) grow and a reader
resumes after any of them, or waits for the next. It is not durable, nothing in it expires, and it has no
leases: one process owns every run it runs (a write is never fenced, a run is never shown as held).
``FunctionExecutor`` runs plain Python functions as tools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import RunNotFoundError, StoreError
from orchestrator.ports import (
    CallSlot,
    Checkpoint,
    EventKind,
    Interrupted,
    Outcome,
    RunSpec,
    RunStore,
    StepCommit,
)
from orchestrator.records import (
    Event,
    RunRecord,
    StoredStatus,
    call_data,
    encode_spec,
    event_order,
    finished_data,
    result_data,
)
from orchestrator.store_ports import ApiStore, RunRef, StoredRun, Submitted, input_turns
from toolbox.protocol import ToolCall, ToolError, ToolResult

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]
RUNS_INDEX_MAX = 10_000  # the most runs a tenant's index keeps (the newest), as on Redis


@dataclass
class MemoryStore:
    """Keyed as the Redis store is: a run by ``(tenant, run id)``, a thread by ``(tenant, thread id)``, a
    ledger entry by ``(tenant, run id, entry)``."""

    turns: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    records: dict[RunRef, StoredRun] = field(default_factory=dict)
    steps: dict[RunRef, list[dict[str, Any]]] = field(default_factory=dict)
    streams: dict[RunRef, list[Event]] = field(default_factory=dict)  # each run's events, in order
    # The call while it runs (a call that never finished: interrupted), then its result.
    ledger: dict[tuple[str, str, str], ToolCall | ToolResult] = field(default_factory=dict)
    positions: dict[tuple[str, str, str], str] = field(default_factory=dict)  # slot position -> entry
    repeats: dict[RunRef, dict[str, int]] = field(default_factory=dict)
    outcomes: dict[RunRef, Outcome] = field(default_factory=dict)
    index: dict[str, list[str]] = field(default_factory=dict)  # tenant -> its run ids, oldest first
    claims: dict[tuple[str, str], str] = field(default_factory=dict)  # a thread's latest run
    bindings: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # key -> (print, run)
    cancels: set[RunRef] = field(default_factory=set)
    queue: list[RunRef] = field(default_factory=list)
    _last_id: tuple[int, int] = field(default=(0, 0), init=False, repr=False)
    _waiters: set[asyncio.Future[None]] = field(default_factory=set, init=False, repr=False)

    # -- the RunStore port -------------------------------------------------------------------------

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        ref = (spec.tenant, spec.run_id)
        found = self.records.get(ref)
        if found is not None and found[1].step != step.step:
            raise StoreError(f"run {spec.run_id}: step {step.step} is not the next step to commit")
        self.turns.setdefault((spec.tenant, spec.thread_id), []).extend(step.turns)
        counts = self.repeats.setdefault(ref, {})
        for key, count in step.repeats.items():
            counts[key] = counts.get(key, 0) + count
        self.steps.setdefault(ref, []).append(step.record)
        if found is not None:  # a run the loop runs without a submission has no record
            self.records[ref] = (found[0], found[1].committed(step))
        self._emit(ref, "step", step.record)
        if step.outcome is not None:  # the run's last step carries its end (as the Redis store writes it)
            self._end(ref, step.outcome)

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        ref = (spec.tenant, spec.run_id)
        if delta:
            self._emit(ref, "delta", {"step": slot.step, "text": delta})
        before = self.positions.get((*ref, slot.position))
        self.positions[(*ref, slot.position)] = slot.entry
        found = self.ledger.get((*ref, slot.entry))
        if isinstance(found, ToolResult):
            return dataclasses.replace(found, call_id=call.id)
        if found is not None:
            return Interrupted(call)
        self.ledger[(*ref, slot.entry)] = call
        data = call_data(slot, call)
        self._emit(ref, "tool_call", data | {"arguments": call.arguments})
        if before is not None and before != slot.entry:
            old = self.ledger[(*ref, before)]
            state = "done" if isinstance(old, ToolResult) else "started"
            superseded = {"entry": before, "name": old.name, "state": state}
            self._emit(ref, "call_superseded", data | {"superseded": superseded})
        return None

    async def end_call(self, spec: RunSpec, slot: CallSlot, result: ToolResult) -> None:
        ref = (spec.tenant, spec.run_id)
        self.ledger[(*ref, slot.entry)] = result
        self._emit(ref, "tool_result", result_data(slot, result))

    async def emit(self, spec: RunSpec, kind: EventKind, data: dict[str, Any]) -> None:
        self._emit((spec.tenant, spec.run_id), kind, data)

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        """Record the run's end (a no-op when its last step's commit recorded it already)."""
        ref = (spec.tenant, spec.run_id)
        found = self.records.get(ref)
        if found is None or found[1].status != "finished":
            self._end(ref, outcome)

    async def fail(self, tenant: str, run_id: str, error: str) -> None:
        self._update((tenant, run_id), status="failed", error=error, finished_at=time.time())
        self._emit((tenant, run_id), "failed", {"error": error})

    async def load(self, tenant: str, run_id: str) -> tuple[RunSpec, Checkpoint, StoredStatus]:
        """The run's spec, its last checkpoint, and its status."""
        found = self.records.get((tenant, run_id))
        if found is None:
            raise RunNotFoundError(f"no run {run_id!r} for tenant {tenant!r}")
        spec, record = found
        turns = self.turns.get((tenant, spec.thread_id), [])[record.window_start :]
        return spec, record.checkpoint(turns, self.repeats.get((tenant, run_id), {})), record.status

    def _end(self, ref: RunRef, outcome: Outcome) -> None:
        self.outcomes[ref] = outcome
        end = {"finished_at": time.time(), "stop_reason": outcome.stop_reason, "awaiting": outcome.awaiting}
        self._update(ref, status="finished", output=outcome.output, value=outcome.value, **end)
        self._emit(ref, "finished", finished_data(outcome))

    def _update(self, ref: RunRef, **changes: Any) -> None:
        found = self.records.get(ref)
        if found is not None:  # a run the loop runs without a submission has no record
            self.records[ref] = (found[0], dataclasses.replace(found[1], **changes))

    def _emit(self, ref: RunRef, kind: EventKind, data: dict[str, Any]) -> None:
        ms, seq = self._last_id
        now = int(time.time() * 1000)
        self._last_id = (now, 0) if now > ms else (ms, seq + 1)
        event_id = f"{self._last_id[0]}-{self._last_id[1]}"
        self.streams.setdefault(ref, []).append(Event(event_id, kind, data))
        self._changed()

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- submissions ---------------------------------------------------------------------------------

    async def submit(
        self,
        spec: RunSpec,
        ckpt: Checkpoint,
        text: str | None,
        *,
        enqueue: bool = True,
        earlier: Sequence[str] = (),
        claim: bool = False,
        existing_thread: bool = False,
        idempotency: tuple[str, str] | None = None,
        follows: str | None = None,
    ) -> Submitted:
        """As ``store_ports.Submissions.submit`` says."""
        encode_spec(spec)  # a spec that would not read back is refused, as on Redis
        turns = input_turns(earlier, text)
        thread = (spec.tenant, spec.thread_id)
        bound = None if idempotency is None else self.bindings.get((spec.tenant, idempotency[0]))
        if bound is not None:
            return Submitted("replay", bound[1], fingerprint=bound[0])
        if existing_thread and not self.turns.get(thread):
            return Submitted("no_thread", spec.run_id)
        if follows is not None and self.claims.get(thread) != follows:
            return Submitted("moved", self.claims.get(thread, ""))
        holder = self.claims.get(thread) if claim else None
        if holder is not None and holder != spec.run_id and self._busy(spec.tenant, holder):
            return Submitted("busy", holder)
        if claim:
            self.claims[thread] = spec.run_id
        self.turns.setdefault(thread, []).extend(turns)
        record = RunRecord.queued(spec, ckpt, time.time())
        record = dataclasses.replace(record, first_turn=len(self.turns[thread]))
        self.records[(spec.tenant, spec.run_id)] = (spec, record)
        self._index(spec.tenant, spec.run_id)
        if enqueue:
            self.queue.append((spec.tenant, spec.run_id))
        if idempotency is not None:
            self.bindings[(spec.tenant, idempotency[0])] = (idempotency[1], spec.run_id)
        self._changed()
        return Submitted("created", spec.run_id, record)

    def _busy(self, tenant: str, run_id: str) -> bool:
        found = self.records.get((tenant, run_id))
        return found is not None and found[1].status in ("queued", "running")

    def _index(self, tenant: str, run_id: str) -> None:
        runs = self.index.setdefault(tenant, [])
        if run_id in runs:
            runs.remove(run_id)
        runs.append(run_id)
        del runs[:-RUNS_INDEX_MAX]

    # -- reads and control ---------------------------------------------------------------------------

    async def record(self, tenant: str, run_id: str) -> StoredRun | None:
        return self.records.get((tenant, run_id))

    async def runs(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[StoredRun], bool]:
        newest = self.index.get(tenant, [])[::-1]
        start = 0
        if after:
            if after not in newest:
                raise RunNotFoundError(f"no run {after!r} for tenant {tenant!r}")
            start = newest.index(after) + 1
        page = newest[start : start + limit + 1]
        found = [self.records[(tenant, run_id)] for run_id in page[:limit]]
        return found, len(page) > limit

    async def thread(self, tenant: str, thread_id: str) -> list[str]:
        return list(self.turns.get((tenant, thread_id), []))

    async def run_turns(self, tenant: str, run_id: str) -> tuple[StoredRun, list[str]] | None:
        found = self.records.get((tenant, run_id))
        if found is None:
            return None
        record = found[1]
        turns = self.turns.get((tenant, found[0].thread_id), [])
        return found, turns[record.first_turn : record.first_turn + record.turn_count]

    async def events(
        self, tenant: str, run_id: str, after: str = "0-0", *, block_ms: int | None = None
    ) -> list[Event]:
        found = await MemoryEventReader(self).read({(tenant, run_id): after}, block_ms=block_ms)
        return found.get((tenant, run_id), [])

    def events_after(self, ref: RunRef, after: str) -> list[Event]:
        """The run's events after the id ``after`` (at most 1000, as a Redis read gives)."""
        mark = event_order(after)
        return [event for event in self.streams.get(ref, []) if event_order(event.id) > mark][:1000]

    def on_change(self, waiter: asyncio.Future[None]) -> None:
        """Resolve ``waiter`` at the next write (an event, a submission)."""
        self._waiters.add(waiter)

    def forget(self, waiter: asyncio.Future[None]) -> None:
        self._waiters.discard(waiter)

    def status(self, ref: RunRef) -> StoredStatus | None:
        found = self.records.get(ref)
        return None if found is None else found[1].status

    def reader(self) -> MemoryEventReader:
        return MemoryEventReader(self)

    async def request_cancel(self, tenant: str, run_id: str) -> StoredStatus | None:
        """As on Redis: a queued run is finished here, cancelled; a running one only hears of it."""
        ref = (tenant, run_id)
        found = self.records.get(ref)
        if found is None:
            return None
        self.cancels.add(ref)
        if found[1].status == "queued" and not found[1].leased:
            ended = {"status": "finished", "stop_reason": "cancelled", "output": "", "value": None}
            self._update(ref, **ended)
            self._emit(ref, "finished", finished_data(Outcome(run_id, "cancelled")))
        return self.status(ref)

    async def delete(self, tenant: str, run_id: str) -> Literal["deleted", "busy"] | None:
        ref = (tenant, run_id)
        found = self.records.get(ref)
        if found is None:
            return None
        if found[1].status in ("queued", "running"):
            return "busy"
        for table in (self.records, self.steps, self.streams, self.repeats, self.outcomes):
            table.pop(ref, None)
        for key in [key for key in self.ledger if key[:2] == ref]:
            del self.ledger[key]
        self.cancels.discard(ref)
        self.index[tenant] = [one for one in self.index.get(tenant, []) if one != run_id]
        return "deleted"

    async def ping(self) -> bool:
        return True


class MemoryEventReader:
    """``store_ports.EventReader`` on a ``MemoryStore``: waits for the next write until one of the runs
    has events after its position, ``block_ms`` passes (0: for as long as it takes) or ``interrupt``."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._wake: asyncio.Future[None] | None = None
        self._interrupted = False

    async def read(
        self, positions: Mapping[RunRef, str], *, block_ms: int | None = None
    ) -> dict[RunRef, list[Event]]:
        timeout = None if not block_ms else block_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = {ref: self._store.events_after(ref, after) for ref, after in positions.items()}
                    found = {ref: events for ref, events in found.items() if events}
                    if found or block_ms is None or not await self._next():
                        return found
        except TimeoutError:
            return {}

    async def _next(self) -> bool:
        """Wait for the store's next write; ``False`` when interrupted instead."""
        wake = self._wake = asyncio.get_running_loop().create_future()
        self._interrupted = False
        self._store.on_change(wake)
        try:
            await wake
        finally:
            self._store.forget(wake)
            self._wake = None
        return not self._interrupted

    async def statuses(self, runs: Sequence[RunRef]) -> list[StoredStatus | None]:
        return [self._store.status(ref) for ref in runs]

    async def interrupt(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._interrupted = True
            self._wake.set_result(None)

    async def aclose(self) -> None:
        await self.interrupt()


class FunctionExecutor:
    """Runs tools that are Python functions (sync or async) called with the arguments by name.

    A function that raises is a failure the model can act on: it becomes a ``tool_error`` result.
    """

    def __init__(self, tools: Mapping[str, ToolFunction]) -> None:
        self._tools = dict(tools)
        self.calls: list[ToolCall] = []

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        self.calls.append(call)
        function = self._tools.get(call.name)
        if function is None:
            return ToolResult(
                call.id, call.name, error=ToolError("unknown_tool", f"no tool named {call.name!r}")
            )
        try:
            value = function(**call.arguments)
            if inspect.isawaitable(value):
                value = await value
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the tool's own failure is the model's to handle
            return ToolResult(
                call.id, call.name, error=ToolError("tool_error", f"{type(exc).__name__}: {exc}")
            )
        return ToolResult(call.id, call.name, content=value)


def _ports(store: MemoryStore) -> tuple[ApiStore, RunStore]:
    """Never called: mypy checks here that a ``MemoryStore`` is both ports."""
    return store, store
