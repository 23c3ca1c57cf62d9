"""An in-process ``RunStore`` and ``ToolExecutor``: for unit tests, benchmarks and single-process use.

``MemoryStore`` keeps exactly what the Redis store keeps (turns, step records, events, the ledger), in
dicts; it is not durable. ``FunctionExecutor`` runs plain Python functions as tools.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.ports import Interrupted, Outcome, RunSpec, StepCommit
from toolbox.protocol import ToolCall, ToolError, ToolResult

ToolFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@dataclass
class MemoryStore:
    turns: dict[str, list[str]] = field(default_factory=dict)
    steps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    ledger: dict[tuple[str, int, int], ToolResult | None] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        self.turns.setdefault(spec.thread_id, []).extend(step.turns)
        self.steps.setdefault(spec.run_id, []).append(step.record)
        await self.emit(spec, "step", step.record)

    async def begin_call(
        self, spec: RunSpec, step: int, index: int, call: ToolCall
    ) -> ToolResult | Interrupted | None:
        key = (spec.run_id, step, index)
        if key in self.ledger:
            return self.ledger[key] or Interrupted(call)
        self.ledger[key] = None
        return None

    async def end_call(self, spec: RunSpec, step: int, index: int, result: ToolResult) -> None:
        self.ledger[(spec.run_id, step, index)] = result
        await self.emit(
            spec, "tool_result", {"step": step, "index": index, "name": result.name, "ok": result.ok}
        )

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
