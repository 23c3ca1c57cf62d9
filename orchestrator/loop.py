"""The agent loop: ask the model for a turn, run its tool calls, feed the results back, until it answers.

Each iteration returns one of a closed set of next steps: ``Continue`` (tools ran, or a JSON answer is
retried), ``Answer``, ``Await`` (the model called a tool the client runs: the run ends with the turn's
calls awaiting their results, and the client's next run starts with their tool turn) or ``Stop`` (a
limit, cancellation). Every step is committed to the store before the next one starts, so a run resumed
from its checkpoint repeats no acknowledged step.

Two events stop a run from outside: ``cancel`` (the run ends ``cancelled``) and ``lost`` (another worker
owns the run now: ``LeaseLostError``). Each is awaited during a step, which is then cancelled wherever it
is, and checked explicitly at every step boundary: a step task that swallowed its cancellation (as
``asyncio.wait_for`` does on Python 3.11 when the write it waits on has just completed) still ends the run
there, never later.

The prompt is append-only (README, "The Hermes wire format"): the prompt for step N+1 is the prompt for step
N, plus the model's raw output, ``<|im_end|>``, the tool turn and the assistant cue, byte for byte; only a
compaction (when the context window would overflow) starts a new prefix.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any, TypeAlias

from opentelemetry.trace import Span

from orchestrator import context
from orchestrator.calls import Dispatch, Runner, Telling, chain
from orchestrator.errors import ContextOverflowError, LeaseLostError
from orchestrator.ports import (
    ChatEngine,
    Checkpoint,
    Chunk,
    CompletionRequest,
    Outcome,
    RunSpec,
    RunStore,
    StepCommit,
    StopReason,
    ToolExecutor,
)
from orchestrator.tracing import Tracing, record_run_end, record_step, record_stop, record_usage, trace_id
from toolbox.hermes import (
    ParsedTurn,
    StreamParser,
    ToolCallFailed,
    ToolCallReady,
    assistant_turn,
    check_json_answer,
    neutralize,
    render_tool_turn,
    turn,
)
from toolbox.hermes.constraint import json_answer, text_only, tool_calls
from toolbox.protocol import AssistantMessage, ToolCall, ToolResult

_CALLS = (ToolCallReady, ToolCallFailed)  # the parser's events that tell a call (a flush first)


@dataclass(frozen=True)
class Continue:
    commit: StepCommit | None


@dataclass(frozen=True)
class Answer:
    commit: StepCommit
    text: str
    value: Any = None


@dataclass(frozen=True)
class Await:
    """The turn called tools the client runs: its assistant turn is committed, its tool turn is not (the
    client's results are not in yet); ``calls`` are the turn's calls, each settled or awaited, in order."""

    commit: StepCommit
    calls: tuple[ToolResult | ToolCall, ...]


@dataclass(frozen=True)
class Stop:
    reason: StopReason
    commit: StepCommit | None = None


Next: TypeAlias = Continue | Answer | Await | Stop
End: TypeAlias = Answer | Await | Stop


@dataclass(frozen=True)
class ModelTurn:
    """What one model call produced: the parsed output, its calls' results in order, and the usage."""

    parsed: ParsedTurn
    results: list[ToolResult | ToolCall]  # a ToolCall: a call the client runs, awaiting its result
    limit: StopReason | None
    repeats: dict[str, int]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    dropped: int
    model_s: float = 0.0  # from the request to the stream's end
    tools_s: float = 0.0  # waiting for calls still running after the stream ended


def choice_for(spec: RunSpec, step: int) -> str:
    """What model turn ``step`` may do (``RunSpec.tool_choice``; ``"auto"`` past its end)."""
    return spec.tool_choice[step] if step < len(spec.tool_choice) else "auto"


def constraint_for(spec: RunSpec, step: int) -> dict[str, Any] | None:
    """The decoding constraint for model turn ``step`` of a constrained run (``RunSpec.tool_choice``),
    or its JSON-mode schema; ``None`` when unconstrained. A run with both tools and a schema constrains
    the calls only: one grammar cannot hold both."""
    if not spec.constrained:
        return None
    if not spec.tools:
        return json_answer(spec.json_schema) if spec.json_schema is not None else None
    choice = choice_for(spec, step)
    if choice == "none":
        return text_only()
    if choice == "auto":
        return tool_calls(spec.tools)
    # A required turn is one call: the task goes a tool at a time, each call seeing the results before it.
    offered = [tool for tool in spec.tools if choice in ("required", tool.name)]
    return tool_calls(offered, require=True, single=True)


@dataclass(frozen=True)
class Halt:
    """The events that stop a run from outside."""

    run_id: str
    cancel: asyncio.Event
    lost: asyncio.Event

    def check(self) -> Stop | None:
        """``Stop("cancelled")`` once cancellation was requested; raises once the lease is lost."""
        if self.lost.is_set():
            raise LeaseLostError(f"run {self.run_id}: another worker owns it now")
        return Stop("cancelled") if self.cancel.is_set() else None


class Deltas:
    """The model's text as ``delta`` events, for clients watching the run live: pieces are batched and sent
    at most every ``interval_s``, when the turn ends, and with each call (the text up to a call rides in
    the write that tells the call: ``Telling``), so a fast stream costs a few writes a second and a tool
    step no write of its own. Every write that carries text waits for the one before it: watchers read
    the text in order, and a call's text before the call.
    A resumed step streams again from its start: deltas are a live view, the committed turns the record."""

    def __init__(
        self,
        store: RunStore,
        spec: RunSpec,
        step: int,
        clock: Callable[[], float],
        interval_s: float = 0.2,
    ) -> None:
        self._store, self._spec, self._step, self._clock = store, spec, step, clock
        self._interval, self._pending, self._sent_at = interval_s, "", clock()
        self._last: asyncio.Future[None] | None = None  # the last write that carries text, in order

    def add(self, text: str) -> bool:
        """Keep ``text`` for the next flush; returns whether a flush is due (``interval_s`` has passed)."""
        self._pending += text
        return self._clock() - self._sent_at >= self._interval

    def tell(self) -> Telling:
        """The text so far, to go with the next call told, in its turn after the writes before it."""
        text, self._pending, self._sent_at = self._pending, "", self._clock()
        telling = chain(text, self._last)
        self._last = telling.mine
        return telling

    async def flush(self) -> None:
        if not self._pending:
            return
        telling = self.tell()
        try:
            await telling.turn()
            await self._store.emit(self._spec, "delta", {"step": self._step, "text": telling.delta})
        finally:
            telling.done()


class Agent:
    """Runs agent runs against one engine, one tool executor and one store."""

    def __init__(
        self,
        engine: ChatEngine,
        executor: ToolExecutor,
        store: RunStore,
        *,
        counter: context.TokenCounter | None = None,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine, self._executor, self._store = engine, executor, store
        self._counter = counter or context.EstimateCounter()
        self._turn_counter = context.CachedCounter(self._counter)  # turns repeat in every prompt
        self._tracing = tracing or Tracing()
        self._clock = clock

    async def run(
        self,
        spec: RunSpec,
        ckpt: Checkpoint,
        cancel: asyncio.Event | None = None,
        *,
        lost: asyncio.Event | None = None,
    ) -> Outcome:
        """Run ``spec`` from ``ckpt`` (a new run's, or the last committed one) to its end, or until
        ``cancel`` is set (it ends ``cancelled``) or ``lost`` is set (it raises ``LeaseLostError``)."""
        halt = Halt(spec.run_id, cancel or asyncio.Event(), lost or asyncio.Event())
        with self._tracing.agent(spec.run_id, spec.thread_id, ckpt.trace) as span:
            while True:
                step = (
                    halt.check()
                    or self._limit(spec, ckpt)
                    or await self._guarded(self._step(spec, ckpt), ckpt, halt)
                )
                commit = step.commit
                if commit is not None and not isinstance(step, Continue):
                    # The run's last step carries its end, so that the two are written together.
                    commit = dataclasses.replace(commit, outcome=self._outcome(spec, ckpt, step, commit))
                if commit is not None:
                    await self._commit(spec, ckpt, commit)
                if isinstance(step, Continue):
                    continue
                return await self._finish(spec, ckpt, step, span, recorded=commit is not None)

    def _limit(self, spec: RunSpec, ckpt: Checkpoint) -> Stop | None:
        if ckpt.step >= spec.limits.max_steps:
            return Stop("max_steps")
        if self._clock() >= ckpt.deadline:
            return Stop("deadline")
        if ckpt.tokens >= spec.limits.token_budget:
            return Stop("token_budget")
        return None

    async def _guarded(self, step: Coroutine[Any, Any, Next], ckpt: Checkpoint, halt: Halt) -> Next:
        """The step, unless the deadline passes or the run is halted first (then the step is stopped
        wherever it is: mid-generation or mid-tool; what it did is not committed)."""
        task = asyncio.ensure_future(step)
        waiters = {task, *(asyncio.ensure_future(event.wait()) for event in (halt.cancel, halt.lost))}
        try:
            await asyncio.wait(waiters, timeout=ckpt.deadline - self._clock(), return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
                    with suppress(asyncio.CancelledError):
                        await waiter
        # Halted wins over whatever the step task did with its cancellation (even if it swallowed it and
        # ran to its end): the step is not committed. Its exception is retrieved first, since check()
        # raises once the lease is lost, so that the loop does not log it: the run ends here anyway.
        if not task.cancelled():
            task.exception()
        halted = halt.check()
        if halted is not None:
            return halted
        if task.cancelled():
            return Stop("deadline")
        return task.result()

    async def _step(self, spec: RunSpec, ckpt: Checkpoint) -> Next:
        max_tokens = min(spec.limits.max_tokens, spec.limits.token_budget - ckpt.tokens)
        tail = spec.answer_turn if choice_for(spec, ckpt.step) == "none" else ""
        fitted = context.fit(
            self._turn_counter,
            spec.prefix,
            ckpt.turns,
            ckpt.window_start,
            spec.limits.context_window - max_tokens,
            tail=tail,
        )
        if fitted.drop is None:
            return Stop("context_overflow")
        if fitted.drop:
            await self._compact(spec, ckpt, fitted.drop)
        prompt = context.render(spec.prefix, ckpt.turns, ckpt.window_start, tail)
        try:
            out = await self._model_turn(spec, ckpt, prompt, max_tokens, fitted.drop)
        except ContextOverflowError:
            # Our count was below the engine's (an estimate, or a different tokenizer): drop more, retry.
            drop = context.halve(ckpt.turns)
            if drop is None:
                return Stop("context_overflow")
            await self._compact(spec, ckpt, drop)
            return Continue(None)
        return self._decide(spec, ckpt, out)

    async def _compact(self, spec: RunSpec, ckpt: Checkpoint, drop: int) -> None:
        del ckpt.turns[:drop]
        ckpt.window_start += drop
        await self._store.emit(
            spec, "compacted", {"step": ckpt.step, "dropped": drop, "window_start": ckpt.window_start}
        )

    async def _model_turn(
        self, spec: RunSpec, ckpt: Checkpoint, prompt: str, max_tokens: int, dropped: int
    ) -> ModelTurn:
        """Stream the model's turn; each call is dispatched the moment the parser completes it."""
        dispatch = Dispatch(Runner(spec, self._executor, self._store, self._tracing), ckpt)
        parser = StreamParser(id_prefix=f"call_{ckpt.step}_")
        request = CompletionRequest(
            prompt,
            max_tokens,
            sampling=spec.sampling,
            session_id=spec.thread_id,
            constraint=constraint_for(spec, ckpt.step),
            model=spec.model,
        )
        try:
            model = spec.model or self._engine.model
            with self._tracing.chat(model, spec.thread_id, max_tokens, spec.tenant) as span:
                deltas = Deltas(self._store, spec, ckpt.step, self._clock)
                started = time.monotonic()
                last = await self._stream(request, parser, dispatch, deltas)
                streamed = time.monotonic()
                parsed = parser.finish()
                for event in parser.drain():
                    if type(event) in _CALLS:
                        dispatch.on(event, deltas.tell())
                usage = (
                    last.prompt_tokens or self._counter.count(prompt),
                    last.completion_tokens or self._counter.count(parsed.text),
                )
                record_usage(span, *usage, last.finish_reason)
            results = await dispatch.results()
        finally:
            dispatch.cancel()
        return ModelTurn(
            parsed,
            results,
            dispatch.limit,
            dispatch.repeats,
            last.finish_reason,
            *usage,
            dropped,
            model_s=streamed - started,
            tools_s=time.monotonic() - streamed,
        )

    async def _stream(
        self, request: CompletionRequest, parser: StreamParser, dispatch: Dispatch, deltas: Deltas
    ) -> Chunk:
        last = Chunk()
        async with aclosing(self._engine.stream(request)) as chunks:
            async for chunk in chunks:
                events = parser.feed(chunk.text)
                if deltas.add(chunk.text):
                    await deltas.flush()
                for event in events:
                    if type(event) in _CALLS:  # the text so far goes with the call (content events: none)
                        dispatch.on(event, deltas.tell())
                if chunk.finish_reason is not None:
                    last = chunk
                if parser.done:
                    break  # the model wrote a turn-ending marker: whatever follows is not ours to read
        await deltas.flush()
        return last

    def _decide(self, spec: RunSpec, ckpt: Checkpoint, out: ModelTurn) -> Next:
        assistant = assistant_turn(AssistantMessage(raw=out.parsed.text))
        ran = [result for result in out.results if isinstance(result, ToolResult)]
        if len(ran) < len(out.results):  # the client's calls come first: a limit applies to its next run
            return Await(self._commit_of(ckpt, out, assistant), tuple(out.results))
        if ran:
            commit = self._commit_of(ckpt, out, assistant, render_tool_turn(ran))
            return Stop(out.limit, commit) if out.limit else Continue(commit)
        if spec.json_schema is None:
            return Answer(self._commit_of(ckpt, out, assistant), out.parsed.content)
        checked = check_json_answer(out.parsed.content, spec.json_schema)
        if checked.ok:
            return Answer(self._commit_of(ckpt, out, assistant), out.parsed.content, checked.value)
        if ckpt.json_retries >= spec.limits.json_retries:
            return Stop("json_invalid", self._commit_of(ckpt, out, assistant))
        feedback = turn("user", neutralize(checked.error or ""))
        return Continue(self._commit_of(ckpt, out, assistant, feedback, json_retry=True))

    def _commit_of(
        self, ckpt: Checkpoint, out: ModelTurn, *turns: str, json_retry: bool = False
    ) -> StepCommit:
        record = {
            "step": ckpt.step,
            "calls": [result.name for result in out.results],
            "errors": sum(1 for result in out.results if isinstance(result, ToolResult) and not result.ok),
            "finish_reason": out.finish_reason,
            "compacted": out.dropped,
            "model_s": round(out.model_s, 4),
            "tools_s": round(out.tools_s, 4),
            "trace_id": trace_id(ckpt.trace),  # rides in the step's event: watchers link to the trace
        }
        return StepCommit(
            step=ckpt.step,
            turns=turns,
            window_start=ckpt.window_start,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            json_retries=ckpt.json_retries + json_retry,
            repeats=out.repeats,
            record=record,
        )

    async def _commit(self, spec: RunSpec, ckpt: Checkpoint, commit: StepCommit) -> None:
        await self._store.commit(spec, commit)
        ckpt.apply(commit)
        record = commit.record
        record_step(spec.model or self._engine.model, record["model_s"] + record["tools_s"])

    @staticmethod
    def _outcome(spec: RunSpec, ckpt: Checkpoint, end: End, last: StepCommit | None = None) -> Outcome:
        """The run's end, as it stands once ``last`` (its last step, when it has one to commit) is in."""
        reason: StopReason = "answer" if isinstance(end, Answer) else "tool_calls"
        return Outcome(
            run_id=spec.run_id,
            stop_reason=end.reason if isinstance(end, Stop) else reason,
            output=end.text if isinstance(end, Answer) else "",
            value=end.value if isinstance(end, Answer) else None,
            steps=last.step + 1 if last is not None else ckpt.step,
            prompt_tokens=ckpt.prompt_tokens + (last.prompt_tokens if last is not None else 0),
            completion_tokens=ckpt.completion_tokens + (last.completion_tokens if last is not None else 0),
            awaiting=end.calls if isinstance(end, Await) else (),
        )

    async def _finish(
        self, spec: RunSpec, ckpt: Checkpoint, end: End, span: Span, *, recorded: bool
    ) -> Outcome:
        """The run's end; ``recorded``: its last step's commit wrote it already (no write left to make)."""
        outcome = self._outcome(spec, ckpt, end)
        reason = outcome.stop_reason
        if not recorded:
            await self._store.finish(spec, outcome)
        record_stop(span, reason)
        record_run_end(reason, ckpt.step)
        return outcome
