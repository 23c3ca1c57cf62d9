"""``caduceus demo``: a real model runs a two-step tool-calling agent run, end to end, on this machine.

The parts are the service's own: the agent loop (``orchestrator.loop.Agent``), its memory in a real Redis
(an embedded redis-server unless ``REDIS_URL`` is set), the tools run by the workers' executor in
sandboxes (``calculator``, and ``files`` writing into the conversation's scratch directory), and the
OpenAI-compatible server that ``--endpoint URL`` names as the engine (that server is the serving path, so
no Ray is started). The run is constrained: every tool call is valid by construction where the server
enforces vLLM's structured outputs.

A 135M model is small, so the task is shaped for it: the offered tool schemas are narrower than the tools'
own (numbers and short patterned strings, which it cannot ramble in), and the run's ``tool_choice`` holds
each turn to the task's shape: turn 1 calls the calculator, turn 2 the files tool, turn 3 answers in text
(the grammar decides which tool; the model writes the arguments: what to compute, what to store, where).
``max_steps`` is the backstop. The printout says what the model did, whatever it did.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from deploy.demo_tools import ANSWER_INSTRUCTION, demo_registry, narrowed
from deploy.local_redis import redis_url
from orchestrator.engines import OpenAICompletionsEngine
from orchestrator.loop import Agent
from orchestrator.ports import (
    ChatEngine,
    Chunk,
    CompletionRequest,
    Limits,
    Outcome,
    RunSpec,
    Sampling,
    ToolExecutor,
)
from orchestrator.redis import RedisStore
from orchestrator.runs import first_checkpoint, new_run
from toolbox.hermes import tool_response_payload
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.sandbox import scratch_dir

QUESTION = "Use the calculator to compute 17 * 23. Then use the files tool to write the result to result.txt."
TENANT = "demo"
#: The task's shape, given to the grammar: compute, then store, then answer in words.
TOOL_CHOICE = ("calculator", "files", "none")
LIMITS = Limits(max_steps=4, max_tokens=96, deadline_s=600.0, context_window=8192)


@dataclass
class StepLog:
    """What one model turn did, as the terminal saw it."""

    text: str = ""
    finish_reason: str | None = None
    calls: list[tuple[ToolCall, ToolResult]] = field(default_factory=list)


@dataclass
class Transcript:
    """Prints the run live and keeps a per-step log for the summary."""

    write: Callable[[str], None]
    steps: list[StepLog] = field(default_factory=list)
    _column: int = 0  # characters written since the last newline

    def model_turn(self) -> None:
        self.steps.append(StepLog())
        self._line(f"--- step {len(self.steps)}: the model writes")

    def text(self, piece: str) -> None:
        self.steps[-1].text += piece
        self._out(piece)

    def finished(self, chunk: Chunk) -> None:
        self.steps[-1].finish_reason = chunk.finish_reason
        self._line(f"    (finish: {chunk.finish_reason}; {chunk.completion_tokens} tokens)")

    def call(self, call: ToolCall, result: ToolResult) -> None:
        # Calls run the moment their block closes, so this can land mid-stream: on a line of its own.
        self.steps[-1].calls.append((call, result))
        self._line(f"    ran {call.name} in its sandbox -> {tool_response_payload(result)}")

    def _line(self, text: str) -> None:
        self._out(("\n" if self._column else "") + text + "\n")

    def _out(self, text: str) -> None:
        self.write(text)
        if text:
            self._column = len(text) - text.rfind("\n") - 1 if "\n" in text else self._column + len(text)


class LiveEngine:
    """The engine, with each streamed piece shown as it arrives."""

    def __init__(self, inner: ChatEngine, transcript: Transcript) -> None:
        self._inner, self._transcript = inner, transcript

    @property
    def model(self) -> str:
        return self._inner.model

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        self._transcript.model_turn()
        async with aclosing(self._inner.stream(request)) as chunks:
            async for chunk in chunks:
                self._transcript.text(chunk.text)
                if chunk.finish_reason is not None:
                    self._transcript.finished(chunk)
                yield chunk


class LiveExecutor:
    """The workers' executor for one conversation (its scratch directory), each call shown with its result."""

    def __init__(self, executor: Executor, conversation: str, transcript: Transcript) -> None:
        self._executor, self._conversation, self._transcript = executor, conversation, transcript

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        # The demo keeps its files where it prints them: its own conversation, not the run's hashed one.
        result = await self._executor.execute(call, self._conversation)
        self._transcript.call(call, result)
        return result


@dataclass(frozen=True)
class DemoResult:
    outcome: Outcome
    steps: list[StepLog]
    scratch: Path
    seconds: float


async def run_demo(engine: ChatEngine, write: Callable[[str], None] = print) -> DemoResult:
    """One constrained agent run of ``QUESTION`` on ``engine``, with Redis and sandboxed tools."""
    transcript = Transcript(write)
    registry = demo_registry()
    spec = new_run(
        tenant=TENANT,
        thread_id=f"demo-{uuid.uuid4().hex[:12]}",
        tools=[narrowed(spec) for spec in registry.specs()],
        limits=LIMITS,
        sampling=Sampling(temperature=0.0, seed=0),
        constrained=True,
        tool_choice=TOOL_CHOICE,
        answer_instruction=ANSWER_INSTRUCTION,
    )
    started = time.monotonic()
    with redis_url() as url:
        client = Redis.from_url(url)
        try:
            async with Executor(registry) as executor:
                live = LiveExecutor(executor, spec.thread_id, transcript)
                outcome = await _run(spec, LiveEngine(engine, transcript), live, RedisStore(client))
        finally:
            await client.aclose()
    seconds = time.monotonic() - started
    return DemoResult(outcome, transcript.steps, scratch_dir(spec.thread_id), seconds)


async def _run(spec: RunSpec, engine: ChatEngine, executor: ToolExecutor, store: RedisStore) -> Outcome:
    # Submitted, then loaded back as a worker would: the run starts from what Redis holds.
    await store.submit(spec, first_checkpoint(spec, []), QUESTION, enqueue=False)
    spec, ckpt, _ = await store.load(spec.tenant, spec.run_id)
    return await Agent(engine, executor, store).run(spec, ckpt)


def summary(result: DemoResult) -> list[str]:
    """The lines printed after the run: the stop reason, the answer, each step, what was written."""
    outcome = result.outcome
    lines = [f"\n=== stop reason: {outcome.stop_reason}; {outcome.steps} steps in {result.seconds:.1f} s"]
    for number, step in enumerate(result.steps, 1):
        calls = "; ".join(_described(call, res, result.scratch) for call, res in step.calls)
        lines.append(f"  step {number}: {calls or 'answered in text'} (finish: {step.finish_reason})")
    lines.append(f"answer: {outcome.output.strip()!r}" if outcome.output else "answer: (none)")
    lines.append(verdict(result.steps))
    lines.append(f"tokens: {outcome.prompt_tokens} prompt, {outcome.completion_tokens} completion")
    return lines


def verdict(steps: list[StepLog]) -> str:
    """Whether the model carried the calculator's result into the file: said plainly, either way."""
    done = [(call, res) for step in steps for call, res in step.calls if res.ok]
    computed = [res.content for call, res in done if call.name == "calculator"]
    stored = [call.arguments.get("content") for call, _ in done if call.name == "files"]
    if not computed or not stored:
        return "verdict: the model did not both compute and store"
    if str(computed[-1]) == stored[-1]:
        return f"verdict: the model stored the calculator's result ({computed[-1]})"
    return (
        f"verdict: the calls were valid, but the model stored {stored[-1]!r}, not the calculator's result "
        f"{computed[-1]} (small models read results poorly: try a Hermes model)"
    )


def _described(call: ToolCall, result: ToolResult, scratch: Path) -> str:
    """One call as the summary tells it; a written file is read back from the scratch directory."""
    if not result.ok:
        return f"called {call.name}, which failed: {result.error}"
    text = f"called {call.name}({json.dumps(call.arguments)}) -> {json.dumps(result.content)}"
    path = scratch / str(call.arguments.get("path", ""))
    if call.name == "files" and call.arguments.get("action") == "write" and path.is_file():
        text += f"; {path} now holds {path.read_text()!r}"
    return text


def main(*, endpoint: str, served_model: str = "") -> int:
    print(f"Running the task against {endpoint} ...", flush=True)
    engine = OpenAICompletionsEngine(endpoint, served_model or "default")
    print(f"the question: {QUESTION}", flush=True)
    result = asyncio.run(_run_and_close(engine))
    for line in summary(result):
        print(line)
    return 0 if result.outcome.stop_reason == "answer" else 1


async def _run_and_close(engine: OpenAICompletionsEngine) -> DemoResult:
    try:
        return await run_demo(engine, _live)
    finally:
        await engine.aclose()


def _live(text: str) -> None:
    print(text, end="", flush=True)
