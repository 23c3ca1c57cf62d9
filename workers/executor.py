"""Running one tool call: validate, run in the tool's sandbox, and return a ``ToolResult``.

Every failure the model can act on comes back as a result with a ``ToolError``, rendered by
``toolbox.hermes.tool_response_payload`` as ``{"name", "content", "error"}``: an unknown tool, invalid
arguments, the tool raising, a timeout, running out of memory, a crash, output cut at the limit, a denied
action. Exceptions are left for our own faults (a sandbox that cannot start).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast, get_args

from toolbox.hermes import validate
from toolbox.protocol import ToolCall, ToolError, ToolErrorType, ToolResult, ToolSpec
from toolbox.tools import context
from workers.registry import ToolEntry, ToolRegistry, resolve
from workers.sandbox import Sandbox, create_sandbox, scratch_dir
from workers.sandbox.policy import Outcome, Task

_KNOWN_ERRORS = frozenset(get_args(ToolErrorType))


class Executor:
    """Runs the calls of one registry's tools. Use as ``async with Executor(registry) as executor``."""

    def __init__(
        self, registry: ToolRegistry, *, sandbox: Sandbox | None = None, scratch_root: Path | None = None
    ) -> None:
        self.registry = registry
        self.sandbox: Sandbox = sandbox or create_sandbox(preload=registry.sandbox_modules())
        self.scratch_root = scratch_root

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.sandbox.close()

    def specs(self) -> list[ToolSpec]:
        return self.registry.specs()

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        error = validate(call, {spec.name: spec for spec in self.registry.specs()})
        entry = self.registry.get(call.name)
        if error is not None or entry is None:
            return ToolResult(call.id, call.name, error=error)
        outcome = await self._run(entry, call.arguments, conversation)
        if outcome.error_type is None:
            return ToolResult(call.id, call.name, content=outcome.content)
        kind = outcome.error_type if outcome.error_type in _KNOWN_ERRORS else "tool_error"
        message = f"{call.name!r} failed: {outcome.error_message}"
        return ToolResult(
            call.id, call.name, content=outcome.content, error=ToolError(cast(ToolErrorType, kind), message)
        )

    def task(self, entry: ToolEntry, arguments: dict[str, Any], conversation: str) -> Task:
        assert entry.target is not None
        scratch = scratch_dir(conversation, self.scratch_root)
        untrusted = entry.isolation == "untrusted"
        return Task(entry.target, arguments, scratch, entry.limits, entry.egress, untrusted)

    async def _run(self, entry: ToolEntry, arguments: dict[str, Any], conversation: str) -> Outcome:
        if entry.remote is not None:
            return _bounded(await entry.remote(arguments, entry.limits), entry.limits.output_bytes)
        if entry.isolation == "trusted":
            outcome = await _in_process(entry, arguments, scratch_dir(conversation, self.scratch_root))
            return _bounded(outcome, entry.limits.output_bytes)
        if entry.isolation == "untrusted" and self.sandbox.mechanism == "process":
            return Outcome(
                error_type="denied",
                error_message="this tool runs untrusted code and no isolation works on this worker "
                "(see 'caduceus doctor'); it is disabled here, so do not call it again",
            )
        return await self.sandbox.run(self.task(entry, arguments, conversation))


def _bounded(outcome: Outcome, limit: int) -> Outcome:
    """Cut a result that did not pass through a sandbox host (which cuts its own) at the output limit."""
    text = json.dumps(outcome.content, default=repr, ensure_ascii=False)
    if len(text.encode()) <= limit:
        return outcome
    message = f"the result passed the {limit}-byte output limit; shown cut"
    return Outcome(text[: limit // 2], "output_truncated", message)


async def _in_process(entry: ToolEntry, arguments: dict[str, Any], scratch: Path) -> Outcome:
    """Run an operator-trusted tool in a thread of this process, under its wall-clock limit."""
    assert entry.target is not None
    function = resolve(entry.target)

    def call() -> Outcome:
        context.use(context.ToolContext(scratch, entry.egress, entry.limits.output_bytes))
        try:
            return Outcome(function(**arguments))
        except context.DeniedError as exc:
            return Outcome(error_type="denied", error_message=str(exc))
        except context.OutputTruncatedError as exc:
            return Outcome(exc.partial, "output_truncated", str(exc))
        except Exception as exc:
            return Outcome(
                error_type="tool_error", error_message=f"the tool raised {type(exc).__name__}: {exc}"
            )

    try:
        return await asyncio.wait_for(asyncio.to_thread(call), entry.limits.wall_seconds)
    except TimeoutError:
        return Outcome(error_type="timeout", error_message=f"the call ran past {entry.limits.wall_seconds} s")
