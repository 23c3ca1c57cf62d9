"""Running one tool call: validate, run in the tool's sandbox, and return a ``ToolResult``.

Every failure the model can act on comes back as a result with a ``ToolError``, rendered by
``toolbox.hermes.tool_response_payload`` as ``{"name", "content", "error"}``: an unknown tool, invalid
arguments, the tool raising, a timeout, running out of memory, a crash, output cut at the limit, a denied
action, writing past the conversation's scratch quota. A sandbox that cannot start (a cold host not ready in
time on a loaded machine) is a result too: the call did not run, and the run goes on with the model told
so, rather than failing over one call. Exceptions are left for our own faults (a call's cgroup limits that
cannot be set, a scratch volume that cannot be mounted).

Each call runs in its conversation's scratch directory (``sandbox.scratch``): held while the call runs,
checked against the conversation's quota after it, and swept for expiry now and then.

Where this worker cannot bound a call as a whole (no memory or pids cgroup, no scratch quota), tools that
run model-written code (``untrusted``) are refused unless the operator sets ``CADUCEUS_ALLOW_UNBOUNDED=1``;
other tools run with per-process limits only, and the worker logs it (``caduceus doctor`` says it too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, cast, get_args

from toolbox.hermes import validate
from toolbox.protocol import ToolCall, ToolError, ToolErrorType, ToolResult, ToolSpec
from toolbox.tools import context
from workers.errors import SandboxError, SandboxStartError
from workers.registry import ToolEntry, ToolRegistry, resolve
from workers.sandbox import Sandbox, create_sandbox
from workers.sandbox import scratch_root as default_scratch_root
from workers.sandbox.policy import Outcome, Task
from workers.sandbox.scratch import ScratchSettings, ScratchStore, coarse_now_ns, fresh_tick_ns

_KNOWN_ERRORS = frozenset(get_args(ToolErrorType))
NOT_STARTED = "the call did not run: its sandbox could not be started; it may be called again"
_log = logging.getLogger(__name__)


class Executor:
    """Runs the calls of one registry's tools. Use as ``async with Executor(registry) as executor``."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        sandbox: Sandbox | None = None,
        scratch_root: Path | None = None,
        scratch: ScratchSettings | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        """``max_concurrent``: calls run at once; the others wait their turn here, in order."""
        self.registry = registry
        self._slots = asyncio.Semaphore(max_concurrent) if max_concurrent else None
        self.sandbox: Sandbox = sandbox or create_sandbox(preload=registry.sandbox_modules())
        self.scratch = ScratchStore(
            scratch_root or default_scratch_root(), scratch or ScratchSettings.from_env()
        )
        self.unbounded = self.sandbox.problems() + ([self.scratch.problem] if self.scratch.problem else [])
        self._allow_unbounded = os.environ.get("CADUCEUS_ALLOW_UNBOUNDED") == "1"
        self._last_sweep = -float("inf")
        self._sweeping: asyncio.Future[list[str]] | None = None
        self._sweep_lock = asyncio.Lock()  # one sweep at a time, the background one or an explicit one
        if self.unbounded:
            _log.warning("tool calls are not bounded as a whole here: %s", "; ".join(self.unbounded))

    @property
    def scratch_root(self) -> Path:
        return self.scratch.root

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sweeping is not None:
            await asyncio.gather(self._sweeping, return_exceptions=True)
        await self.sandbox.close()
        self.scratch.release_all()

    def specs(self) -> list[ToolSpec]:
        return self.registry.specs()

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        if self._slots is None:
            return await self._execute(call, conversation)
        async with self._slots:
            return await self._execute(call, conversation)

    async def _execute(self, call: ToolCall, conversation: str) -> ToolResult:
        error = validate(call, {spec.name: spec for spec in self.registry.specs()})
        entry = self.registry.get(call.name)
        if error is not None or entry is None:
            return ToolResult(call.id, call.name, error=error)
        # Only a call that may go over a quota needs to know which files are its own.
        started = await fresh_tick_ns() if self.scratch.quota else coarse_now_ns()
        scratch = await self._enter(conversation)
        try:
            outcome = await self._run(entry, call.arguments, scratch, conversation)
        except SandboxStartError as exc:
            _log.warning("call %s of %r did not run: %s", call.id, call.name, exc)
            outcome = Outcome(error_type="crashed", error_message=f"{NOT_STARTED} ({exc})")
        finally:
            self.scratch.leave(conversation)
        outcome = await self._within_quota(outcome, conversation, started)
        self._maybe_sweep()
        return _result(call, outcome)

    def task(self, entry: ToolEntry, arguments: dict[str, Any], conversation: str) -> Task:
        """The sandbox task of a call (its conversation's scratch directory made ready and held)."""
        assert entry.target is not None
        scratch = self.scratch.enter(conversation)
        self.scratch.leave(conversation)
        untrusted = entry.isolation == "untrusted"
        return Task(entry.target, arguments, scratch, entry.limits, entry.egress, untrusted)

    async def sweep(self) -> list[str]:
        """Give up idle conversations (their warm sandboxes first), then unmount and expire scratch."""
        async with self._sweep_lock:
            for conversation in self.scratch.idle():
                await self.sandbox.discard(self.scratch.path(conversation))
                self.scratch.release(conversation)
            return await asyncio.to_thread(self.scratch.sweep)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.scratch.settings.sweep_seconds:
            return
        if self._sweeping is None or self._sweeping.done():
            self._last_sweep = now
            self._sweeping = asyncio.ensure_future(self.sweep())

    async def _enter(self, conversation: str) -> Path:
        try:
            if self.scratch.ready(conversation):
                return self.scratch.enter(conversation)
            return await asyncio.to_thread(self.scratch.enter, conversation)
        except OSError as exc:
            raise SandboxError(f"cannot prepare the scratch directory of {conversation!r}: {exc}") from exc

    async def _within_quota(self, outcome: Outcome, conversation: str, started: int) -> Outcome:
        if not self.scratch.over(conversation):
            return outcome
        overrun = await asyncio.to_thread(self.scratch.reclaim, conversation, started)
        return Outcome(error_type="denied", error_message=overrun.message(self.scratch.settings.quota_bytes))

    async def _run(
        self, entry: ToolEntry, arguments: dict[str, Any], scratch: Path, conversation: str
    ) -> Outcome:
        if entry.remote is not None:
            outcome = await entry.remote(arguments, entry.limits, conversation)
            return _bounded(outcome, entry.limits.output_bytes)
        if entry.isolation == "trusted":
            return _bounded(await _in_process(entry, arguments, scratch), entry.limits.output_bytes)
        if entry.isolation == "untrusted":
            refusal = self._refusal()
            if refusal is not None:
                return Outcome(error_type="denied", error_message=refusal)
        assert entry.target is not None
        untrusted = entry.isolation == "untrusted"
        return await self.sandbox.run(
            Task(entry.target, arguments, scratch, entry.limits, entry.egress, untrusted)
        )

    def _refusal(self) -> str | None:
        if self.sandbox.mechanism == "process":
            return (
                "this tool runs untrusted code and no isolation works on this worker "
                "(see 'caduceus doctor'); it is disabled here, so do not call it again"
            )
        if self.unbounded and not self._allow_unbounded:
            return (
                "this tool runs untrusted code and this worker cannot bound a call as a whole "
                f"({'; '.join(self.unbounded)}); it is disabled here, so do not call it again"
            )
        return None


def _result(call: ToolCall, outcome: Outcome) -> ToolResult:
    if outcome.error_type is None:
        return ToolResult(call.id, call.name, content=outcome.content)
    kind = outcome.error_type if outcome.error_type in _KNOWN_ERRORS else "tool_error"
    message = f"{call.name!r} failed: {outcome.error_message}"
    return ToolResult(
        call.id, call.name, content=outcome.content, error=ToolError(cast(ToolErrorType, kind), message)
    )


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
