"""Dispatching one step's tool calls: each starts the moment the parser completes it, concurrently.

Every call gets an index in stream order (broken blocks too). The tool-call ledger keys a call by its step
and what it is (``CallSlot``: a digest of its name and canonical arguments, and how many identical calls
the step ran before it): a call that completed before a crash is replayed from the ledger to the identical
call of the step sampled again, a call that started and never finished is reported to the model as
interrupted (its effect is unknown, so it is never run twice), and a different call, even at the same
index, runs as itself. Before a call runs, its arguments are validated, and the per-step call limit, the
run's call limit and the repeated-call limit are applied; refused calls become error results the model
reads. A valid call to a tool the client runs (``RunSpec.client_tools``) is not run here: it is handed back
as the ``ToolCall`` itself, which the loop turns into the run's end (its calls awaiting their results).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field

from orchestrator.ports import (
    CallSlot,
    Checkpoint,
    Interrupted,
    RunSpec,
    RunStore,
    StopReason,
    ToolExecutor,
    conversation_of,
)
from orchestrator.tracing import Tracing, record_error, record_tool_refused
from toolbox.hermes import StreamEvent, ToolCallFailed, ToolCallReady, validate
from toolbox.protocol import ToolCall, ToolError, ToolResult, ToolSpec
from toolbox.safe_schema import has_patterns

INTERRUPTED = (
    "this call was interrupted by a restart before it returned, so its effect is unknown; "
    "check its effect before calling it again"
)


def signature(call: ToolCall) -> str:
    """Identical calls have identical signatures (argument key order does not matter)."""
    return call.name + " " + json.dumps(call.arguments, sort_keys=True, separators=(",", ":"))


def digest(call: ToolCall) -> str:
    """A short fixed-size name of what a call is (its signature): the ledger's key."""
    return hashlib.sha256(signature(call).encode()).hexdigest()[:32]


# Whether a tool's schema has patterns, by the identity of its parameters (held here, so that an id is
# never reused while it is a key); bounded, since every run brings its own specs.
_PATTERNED: dict[int, tuple[object, bool]] = {}


def _patterned(tools: Sequence[ToolSpec], name: str) -> bool:
    for tool in tools:
        if tool.name == name:
            found = _PATTERNED.get(id(tool.parameters))
            if found is None:
                if len(_PATTERNED) >= 4096:
                    _PATTERNED.clear()
                found = _PATTERNED[id(tool.parameters)] = (tool.parameters, has_patterns(tool.parameters))
            return found[1]
    return False  # not offered: validate refuses it without matching anything


@dataclass
class Telling:
    """How one call is told to watchers, in stream order: the model's text since the last ``delta`` event
    (``delta``) is written with the call's ``tool_call`` event, in one write, once the write before it
    (``previous``: the call before, or a flush of text) is in; ``done`` lets the next one go.
    A refused call is told by its text alone (it has no ``tool_call`` event)."""

    delta: str
    previous: asyncio.Future[None] | None
    mine: asyncio.Future[None]

    async def turn(self) -> None:
        """Wait for the write before this one (shielded: a cancelled call must not cancel that one's)."""
        if self.previous is not None:
            await asyncio.shield(self.previous)

    def done(self) -> None:
        if not self.mine.done():
            self.mine.set_result(None)


def chain(delta: str, previous: asyncio.Future[None] | None) -> Telling:
    return Telling(delta, previous, asyncio.get_running_loop().create_future())


@dataclass
class Runner:
    """What running one call needs; shared by the step's dispatcher."""

    spec: RunSpec
    executor: ToolExecutor
    store: RunStore
    tracing: Tracing

    async def run(self, slot: CallSlot, call: ToolCall, telling: Telling) -> ToolResult:
        with self.tracing.tool(call.name, call.id, self.spec.thread_id) as span:
            await telling.turn()
            try:
                prior = await self.store.begin_call(self.spec, slot, call, telling.delta)
            finally:
                telling.done()
            if isinstance(prior, ToolResult):
                span.set_attribute("caduceus.tool.replayed", True)
                return prior
            if isinstance(prior, Interrupted):
                result = ToolResult(call.id, call.name, error=ToolError("crashed", INTERRUPTED))
            else:
                result = await self._execute(slot, call)
            await self.store.end_call(self.spec, slot, result)
            if result.error is not None:
                record_error(span, result.error.type)
            return result

    async def _execute(self, slot: CallSlot, call: ToolCall) -> ToolResult:
        try:
            return await self.executor.execute(call, conversation_of(self.spec))
        except Exception as exc:
            # The run fails with this exception; its ledger entry is ended first, so that it does not stay
            # "started" (begun, never ended) with nobody left to end it. A cancellation (the run lost its
            # lease or is shutting down) leaves the entry started: whoever takes the run over replays it as
            # interrupted.
            error = ToolError("crashed", f"the call failed on the worker: {type(exc).__name__}: {exc}")
            await self.store.end_call(self.spec, slot, ToolResult(call.id, call.name, error=error))
            raise


#: What a step's call comes to: its result, or (a call the client runs) the call itself, handed back.
Settled = ToolResult | ToolCall


@dataclass
class Dispatch:
    """One step's calls, in stream order. ``limit`` is set when a call hit a run-ending limit."""

    runner: Runner
    checkpoint: Checkpoint
    tasks: list[asyncio.Task[Settled]] = field(default_factory=list)
    repeats: dict[str, int] = field(default_factory=dict)
    ran: dict[str, int] = field(default_factory=dict)  # identical calls run so far, by digest
    limit: StopReason | None = None
    made: int = field(init=False)  # the run's calls before this step (each signature's count, summed)

    def __post_init__(self) -> None:
        self.made = sum(self.checkpoint.repeats.values())

    def on(self, event: StreamEvent, telling: Telling) -> None:
        """Start the call ``event`` tells of (a ``ToolCallReady`` or ``ToolCallFailed``; others are ignored,
        and their ``telling`` is done at once)."""
        if isinstance(event, ToolCallReady):
            self._start(event.call, telling)
        elif isinstance(event, ToolCallFailed):
            error = ToolError("malformed_call", f"tool call block {event.error.index}: {event.error.message}")
            record_tool_refused("tool_call", error.type)
            call_id = f"call_{self.checkpoint.step}_bad{event.error.index}"
            self._add(self._told(telling, ToolResult(call_id, "tool_call", error=error)))
        else:
            telling.done()

    def _start(self, call: ToolCall, telling: Telling) -> None:
        refusal = self._refusal(call, len(self.tasks))
        if refusal is not None:
            record_tool_refused(call.name, refusal.type)
            self._add(self._told(telling, ToolResult(call.id, call.name, error=refusal)))
        elif call.name in self.runner.spec.client_tools:
            self._add(self._handed(call, telling))
        else:
            key = digest(call)
            slot = CallSlot(self.checkpoint.step, len(self.tasks), key, self.ran.get(key, 0))
            self.ran[key] = slot.occurrence + 1
            self._add(self._checked(slot, call, telling))

    async def _checked(self, slot: CallSlot, call: ToolCall, telling: Telling) -> Settled:
        try:
            # A schema's patterns may take up to their time budget to match: such a call is validated on a
            # thread, so that the event loop (heartbeats, every other run) does not wait for it.
            tools = self.runner.spec.tools
            if _patterned(tools, call.name):
                error = await asyncio.to_thread(validate, call, tools)
            else:
                error = validate(call, tools)
            if error is not None:
                record_tool_refused(call.name, error.type)
                return await self._told(telling, ToolResult(call.id, call.name, error=error))
            return await self.runner.run(slot, call, telling)
        finally:
            telling.done()

    async def _handed(self, call: ToolCall, telling: Telling) -> Settled:
        """A call the client runs: handed back once its arguments are valid (else the model reads why)."""
        error = validate(call, self.runner.spec.tools)
        if error is not None:
            record_tool_refused(call.name, error.type)
            return await self._told(telling, ToolResult(call.id, call.name, error=error))
        return await self._told(telling, call)

    async def _told(self, telling: Telling, settled: Settled) -> Settled:
        """A call not run here (refused, or the client's): only its text is told, in its turn."""
        try:
            await telling.turn()
            if telling.delta:
                data = {"step": self.checkpoint.step, "text": telling.delta}
                await self.runner.store.emit(self.runner.spec, "delta", data)
        finally:
            telling.done()
        return settled

    def _add(self, coroutine: Coroutine[object, object, Settled]) -> None:
        self.tasks.append(asyncio.ensure_future(coroutine))

    def _refusal(self, call: ToolCall, index: int) -> ToolError | None:
        limits = self.runner.spec.limits
        if index >= limits.max_tool_calls_per_step:
            self.limit = "max_tool_calls"
            return ToolError(
                "denied", f"at most {limits.max_tool_calls_per_step} tool calls per step; not run"
            )
        total = self.made + sum(self.repeats.values())
        if limits.max_tool_calls is not None and total >= limits.max_tool_calls:
            self.limit = "max_tool_calls"
            return ToolError("denied", f"at most {limits.max_tool_calls} tool calls per run; not run")
        key = signature(call)
        self.repeats[key] = self.repeats.get(key, 0) + 1
        made = self.checkpoint.repeats.get(key, 0) + self.repeats[key]
        if made > limits.max_repeats:
            self.limit = "repeated_call"
            return ToolError("denied", f"this exact call was already made {made - 1} times; not run again")
        return None

    async def results(self) -> list[Settled]:
        return list(await asyncio.gather(*self.tasks))

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
