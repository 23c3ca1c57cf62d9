"""An in-process ``RunStore`` and ``ToolExecutor``: for unit tests, benchmarks and single-process use.

``MemoryStore`` keeps exactly what the Redis store keeps (turns, step records, events, the ledger), in
dicts; it is not durable. ``FunctionExecutor`` runs plain Python functions as tools.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.ports import CallSlot, Interrupted, Outcome, RunSpec, StepCommit
from toolbox.protocol import ToolCall, ToolError, ToolResult

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass
class MemoryStore:
    turns: dict[str, list[str]] = field(default_factory=dict)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    # (run, slot entry) -> the call while it runs (a call that never finished: interrupted), then its result
    ledger: dict[tuple[str, str], ToolCall | ToolResult] = field(default_factory=dict)
    positions: dict[tuple[str, str], str] = field(default_factory=dict)  # (run, slot position) -> entry
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        self.turns.setdefault(spec.thread_id, []).extend(step.turns)
        self.steps.setdefault(spec.run_id, []).append(step.record)
        await self.emit(spec, "step", step.record)
        if step.outcome is not None:  # the run's last step carries its end (as the Redis store writes it)
            await self.finish(spec, step.outcome)

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        if delta:
            await self.emit(spec, "delta", {"step": slot.step, "text": delta})
        before = self.positions.get((spec.run_id, slot.position))
        self.positions[(spec.run_id, slot.position)] = slot.entry
        found = self.ledger.get((spec.run_id, slot.entry))
        if isinstance(found, ToolResult):
            return dataclasses.replace(found, call_id=call.id)
        if found is not None:
            return Interrupted(call)
        self.ledger[(spec.run_id, slot.entry)] = call
        data = {"step": slot.step, "index": slot.index, "call_id": call.id, "name": call.name}
        await self.emit(spec, "tool_call", data | {"arguments": call.arguments})
        if before is not None and before != slot.entry:
            old = self.ledger[(spec.run_id, before)]
            state = "done" if isinstance(old, ToolResult) else "started"
            superseded = {"entry": before, "name": old.name, "state": state}
            data = {"step": slot.step, "index": slot.index, "name": call.name, "superseded": superseded}
            await self.emit(spec, "call_superseded", data)
        return None

    async def end_call(self, spec: RunSpec, slot: CallSlot, result: ToolResult) -> None:
        self.ledger[(spec.run_id, slot.entry)] = result
        data = {"step": slot.step, "index": slot.index, "name": result.name, "ok": result.ok}
        await self.emit(spec, "tool_result", data)

    async def emit(self, spec: RunSpec, kind: str, data: dict[str, Any]) -> None:
        self.events.setdefault(spec.run_id, []).append((kind, data))

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        self.outcomes[spec.run_id] = outcome
        await self.emit(spec, "finished", {"stop_reason": outcome.stop_reason, "steps": outcome.steps})


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
