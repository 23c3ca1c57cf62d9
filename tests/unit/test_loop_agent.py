"""The agent loop against the scripted engine, in-process tools and the in-memory store."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any

import pytest

from orchestrator.calls import digest
from orchestrator.engines import Latency, ScriptedEngine
from orchestrator.errors import LeaseLostError, ScriptError
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import (
    CallSlot,
    Checkpoint,
    Chunk,
    CompletionRequest,
    Interrupted,
    Limits,
    Outcome,
    RunSpec,
    StepCommit,
)
from orchestrator.runs import first_checkpoint, new_run, user_turn
from toolbox.protocol import ToolCall, ToolResult, ToolSpec

ADD = ToolSpec(
    name="add",
    description="Add two integers.",
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
WAIT = ToolSpec(name="wait", description="Wait.", parameters={"type": "object", "properties": {}})


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def setup(
    script: Any, *, tools: dict[str, Any] | None = None, latency: Latency | None = None, **options: Any
) -> tuple[Agent, ScriptedEngine, FunctionExecutor, MemoryStore, RunSpec, Checkpoint]:
    limits = Limits(**options.pop("limits", {}))
    spec = new_run(tenant="t1", thread_id="th1", tools=[ADD, WAIT], limits=limits, **options)
    engine = ScriptedEngine(script, latency=latency)
    executor = FunctionExecutor(tools or {"add": lambda a, b: a + b})
    store = MemoryStore()
    ckpt = first_checkpoint(spec, [user_turn("what is 2+3?")])
    return Agent(engine, executor, store), engine, executor, store, spec, ckpt


def run(agent: Agent, spec: RunSpec, ckpt: Checkpoint, cancel: asyncio.Event | None = None) -> Outcome:
    return asyncio.run(agent.run(spec, ckpt, cancel))


def test_answer_after_a_tool_call_with_append_only_prompts() -> None:
    outputs = [f"Let me add.\n{call('add', a=2, b=3)}", "It is 5."]
    agent, engine, executor, store, spec, ckpt = setup(outputs)
    outcome = run(agent, spec, ckpt)
    engine.assert_complete()
    assert (outcome.stop_reason, outcome.output, outcome.steps) == ("answer", "It is 5.", 2)
    first, second = (request.prompt for request in engine.requests)
    tool_turn = (
        '<|im_start|>tool\n<tool_response>\n{"name": "add", "content": 5}\n</tool_response>\n<|im_end|>\n'
    )
    assert second == first + outputs[0] + "<|im_end|>\n" + tool_turn + "<|im_start|>assistant\n"
    assert [c.arguments for c in executor.calls] == [{"a": 2, "b": 3}]
    assert [r["calls"] for r in store.steps[spec.tenant, spec.run_id]] == [["add"], []]
    assert all(request.session_id == "th1" for request in engine.requests)


def test_calls_run_while_the_model_is_still_generating() -> None:
    long_tail = " and some more words" * 20
    # A small per-token time makes the engine yield between tokens, as a network stream does.
    agent, engine, executor, _, spec, ckpt = setup(
        [call("add", a=1, b=1) + long_tail + call("add", a=2, b=2), "done"], latency=Latency(per_token_s=1e-4)
    )
    order: list[str] = []
    original = engine.stream

    async def traced(request: Any) -> Any:
        async for chunk in original(request):
            order.append("chunk" if chunk.text else "end")
            yield chunk

    async def add_async(a: int, b: int) -> int:
        order.append(f"call {a}")
        return a + b

    executor._tools["add"] = add_async
    engine.stream = traced  # type: ignore[method-assign]
    assert run(agent, spec, ckpt).stop_reason == "answer"
    first_call = order.index("call 1")
    assert "chunk" in order[first_call : order.index("call 2")], "the first call ran before the stream ended"


def test_invalid_and_malformed_calls_go_back_to_the_model() -> None:
    outputs = [call("add", a="two", b=3) + "<tool_call>{not json</tool_call>" + call("nope"), "sorry"]
    agent, engine, executor, _, spec, ckpt = setup(outputs)
    assert run(agent, spec, ckpt).stop_reason == "answer"
    assert executor.calls == []
    second = engine.requests[1].prompt
    assert "invalid_arguments" in second and "malformed_call" in second and "unknown_tool" in second


def test_max_steps() -> None:
    agent, _, executor, _, spec, ckpt = setup(
        lambda prompt: call("add", a=prompt.count("tool_response"), b=1), limits={"max_steps": 3}
    )
    outcome = run(agent, spec, ckpt)
    assert (outcome.stop_reason, outcome.steps, len(executor.calls)) == ("max_steps", 3, 3)


def test_max_tool_calls_per_step() -> None:
    output = "".join(call("add", a=i, b=0) for i in range(4))
    agent, engine, executor, _, spec, ckpt = setup([output], limits={"max_tool_calls_per_step": 2})
    outcome = run(agent, spec, ckpt)
    assert outcome.stop_reason == "max_tool_calls"
    assert len(executor.calls) == 2
    engine.assert_complete()


def test_repeated_identical_call() -> None:
    agent, _, executor, _, spec, ckpt = setup(lambda prompt: call("add", a=1, b=1), limits={"max_repeats": 2})
    outcome = run(agent, spec, ckpt)
    assert (outcome.stop_reason, len(executor.calls), outcome.steps) == ("repeated_call", 2, 3)


def test_token_budget() -> None:
    agent, _, _, _, spec, ckpt = setup(
        lambda prompt: call("add", a=prompt.count("<tool_response>"), b=1), limits={"token_budget": 2000}
    )
    outcome = run(agent, spec, ckpt)
    assert outcome.stop_reason == "token_budget"
    assert outcome.prompt_tokens + outcome.completion_tokens >= 2000
    assert 0 < outcome.steps < 16


def test_deadline_mid_generation() -> None:
    agent, _, _, store, spec, ckpt = setup(
        ["word " * 1000], latency=Latency(per_token_s=0.01), limits={"deadline_s": 0.3}
    )
    outcome = run(agent, spec, ckpt)
    assert (outcome.stop_reason, outcome.steps) == ("deadline", 0)
    assert store.steps == {}


def test_cancel_mid_generation() -> None:
    cancel = asyncio.Event()

    def script(prompt: str) -> str:
        asyncio.get_running_loop().call_later(0.05, cancel.set)
        return "word " * 2000

    agent, _, _, store, spec, ckpt = setup(script, latency=Latency(per_token_s=0.005))
    outcome = run(agent, spec, ckpt, cancel)
    assert (outcome.stop_reason, outcome.steps) == ("cancelled", 0)
    assert store.outcomes[spec.tenant, spec.run_id].stop_reason == "cancelled"


def test_cancel_mid_tool_stops_the_tool() -> None:
    cancel = asyncio.Event()
    state: list[str] = []

    async def wait() -> None:
        state.append("started")
        cancel.set()
        try:
            await asyncio.Event().wait()
        finally:
            state.append("stopped")

    agent, _, _, _, spec, ckpt = setup([call("wait")], tools={"wait": wait})
    assert run(agent, spec, ckpt, cancel).stop_reason == "cancelled"
    assert state == ["started", "stopped"]


SCHEMA = {"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}


def test_json_mode_retries_until_valid() -> None:
    outputs = ['{"sum": "five"}', "not json", '```json\n{"sum": 5}\n```']
    agent, engine, _, _, spec, ckpt = setup(outputs, json_schema=SCHEMA)
    outcome = run(agent, spec, ckpt)
    engine.assert_complete()
    assert (outcome.stop_reason, outcome.value, outcome.steps) == ("answer", {"sum": 5}, 3)
    assert "does not match the schema" in engine.requests[1].prompt
    assert "not valid JSON" in engine.requests[2].prompt
    assert engine.requests[2].prompt.startswith(engine.requests[1].prompt)


def test_json_mode_gives_up_after_the_retry_limit() -> None:
    agent, engine, _, _, spec, ckpt = setup(
        ["nope", "still no"], json_schema=SCHEMA, limits={"json_retries": 1}
    )
    assert run(agent, spec, ckpt).stop_reason == "json_invalid"
    engine.assert_complete()


def test_compaction_keeps_the_system_prefix_and_recent_turns() -> None:
    steps = iter(range(100))
    agent, engine, _, store, spec, ckpt = setup(
        lambda prompt: call("add", a=next(steps), b=1) + " padding" * 100,
        limits={"context_window": 3000, "max_tokens": 500, "max_steps": 12},
    )
    outcome = run(agent, spec, ckpt)
    assert outcome.stop_reason == "max_steps"
    compactions = [e.data for e in store.streams[spec.tenant, spec.run_id] if e.kind == "compacted"]
    assert compactions
    last = engine.requests[-1].prompt
    assert last.startswith(spec.prefix) and "earlier turns of this conversation were omitted" in last
    assert len(last.encode()) / 3 <= 2500


def test_context_overflow_is_a_stop_reason_not_an_engine_error() -> None:
    agent, engine, _, _, spec, ckpt = setup(["never used"], limits={"context_window": 100, "max_tokens": 50})
    assert run(agent, spec, ckpt).stop_reason == "context_overflow"
    assert engine.requests == []


def ledgered(store: MemoryStore, spec: RunSpec, step: int, *entries: tuple[ToolCall, Any]) -> None:
    """What an earlier attempt at ``step`` left in the ledger before its worker died: each call, at its index,
    with its result (``None``: it started and never finished)."""

    async def write() -> None:
        for index, (made, content) in enumerate(entries):
            slot = CallSlot(step, index, digest(made))
            assert await store.begin_call(spec, slot, made) is None
            if content is not None:
                await store.end_call(spec, slot, ToolResult(made.id, made.name, content=content))

    asyncio.run(write())


def test_resume_replays_ledgered_calls_and_reports_interrupted_ones() -> None:
    outputs = [call("add", a=1, b=2) + call("add", a=3, b=4), "done"]
    agent, engine, executor, store, spec, ckpt = setup(outputs)
    first, second = (
        ToolCall("call_0_0", "add", {"a": 1, "b": 2}),
        ToolCall("call_0_1", "add", {"b": 4, "a": 3}),
    )
    ledgered(store, spec, 0, (first, None), (second, 7))  # the first started, never finished
    assert run(agent, spec, ckpt).stop_reason == "answer"
    assert executor.calls == []
    assert '"content": 7' in engine.requests[1].prompt and '"crashed"' in engine.requests[1].prompt


def test_a_step_sampled_again_replays_a_result_only_to_the_identical_call() -> None:
    """After a take-over the step is sampled again: a call that ran before gets its own result back
    wherever it now stands, and a different call at a ledgered index runs (it is never handed the result
    of the call that stood there); the replaced call is reported."""
    outputs = [call("add", a=3, b=4) + call("add", a=5, b=6), "done"]
    agent, engine, executor, store, spec, ckpt = setup(outputs)
    ledgered(
        store,
        spec,
        0,
        (ToolCall("call_0_0", "add", {"a": 1, "b": 2}), 3),
        (ToolCall("call_0_1", "add", {"a": 3, "b": 4}), 7),
    )
    assert run(agent, spec, ckpt).stop_reason == "answer"
    assert [made.arguments for made in executor.calls] == [{"a": 5, "b": 6}]
    tool_turn = engine.requests[1].prompt.split("<|im_start|>tool")[-1]
    assert '"content": 7' in tool_turn and '"content": 11' in tool_turn and '"content": 3' not in tool_turn
    superseded = [e.data for e in store.streams[spec.tenant, spec.run_id] if e.kind == "call_superseded"]
    assert [(data["index"], data["superseded"]["state"]) for data in superseded] == [(1, "done")]


class SwallowingEngine(ScriptedEngine):
    """A scripted engine whose stream, once ``cancel`` is set, ends by waiting on a write in flight that
    swallows the step's cancellation: what ``asyncio.wait_for`` does on Python 3.11 when the write it waits
    on completes as the cancellation arrives. The step then runs on to its end."""

    def __init__(self, script: Any, cancel: asyncio.Event) -> None:
        super().__init__(script)
        self._cancel = cancel

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        async for chunk in super().stream(request):
            if chunk.finish_reason is not None and self._cancel.is_set():
                with suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()
            yield chunk


class SignallingStore(MemoryStore):
    """Sets ``event`` while it commits a step: as the heartbeat relays a cancellation (or a lost lease)
    outside the step's wait, between two steps."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__()
        self._event = event

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        await super().commit(spec, step)
        self._event.set()


def swallowing_run(*, lease_lost: bool) -> tuple[ScriptedEngine, SignallingStore, RunSpec, Any]:
    event = asyncio.Event()
    engine = SwallowingEngine(lambda prompt: call("add", a=prompt.count("tool_response"), b=1), event)
    store = SignallingStore(event)
    spec = new_run(tenant="t1", thread_id="th1", tools=[ADD], limits=Limits(max_steps=5))
    agent = Agent(engine, FunctionExecutor({"add": lambda a, b: a + b}), store)
    ckpt = first_checkpoint(spec, [user_turn("count")])
    signals: dict[str, asyncio.Event] = {"lost": event} if lease_lost else {"cancel": event}
    return engine, store, spec, agent.run(spec, ckpt, **signals)


def test_a_cancellation_relayed_while_a_step_commits_ends_the_run_at_that_boundary() -> None:
    engine, store, spec, running = swallowing_run(lease_lost=False)
    outcome = asyncio.run(running)
    assert (outcome.stop_reason, outcome.steps) == ("cancelled", 1)
    assert len(engine.requests) == 1 and store.outcomes[spec.tenant, spec.run_id].stop_reason == "cancelled"


def test_a_lease_lost_while_a_step_commits_ends_the_run_at_that_boundary() -> None:
    engine, store, spec, running = swallowing_run(lease_lost=True)
    with pytest.raises(LeaseLostError):
        asyncio.run(running)
    assert len(engine.requests) == 1 and (spec.tenant, spec.run_id) not in store.outcomes


def test_a_cancellation_that_the_step_swallows_still_ends_the_run() -> None:
    cancel = asyncio.Event()

    def script(prompt: str) -> str:
        if prompt.count("<tool_response>") == 1:
            cancel.set()  # mid-step: the step's task is cancelled at the write it waits on, and swallows it
        return call("add", a=prompt.count("tool_response"), b=1)

    agent, engine, _, store, spec, ckpt = setup(script, limits={"max_steps": 5})
    engine = SwallowingEngine(script, cancel)
    agent = Agent(engine, FunctionExecutor({"add": lambda a, b: a + b}), store)
    outcome = run(agent, spec, ckpt, cancel)
    assert (outcome.stop_reason, outcome.steps) == ("cancelled", 1)


def test_scripted_engine_reports_unused_and_missing_outputs() -> None:
    engine = ScriptedEngine(["a", "b"])
    with pytest.raises(ScriptError):
        engine.assert_complete()
    agent, *_, spec, ckpt = setup([call("add", a=1, b=1)])
    with pytest.raises(ScriptError):
        run(agent, spec, ckpt)


class LosingStore(MemoryStore):
    """Loses the run's lease as its first call begins: the heartbeat relays it while the write fails."""

    def __init__(self, lost: asyncio.Event) -> None:
        super().__init__()
        self._lost = lost

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        self._lost.set()
        raise LeaseLostError(f"run {spec.run_id}: lease lost before call {slot.entry} began")


def test_a_lease_lost_mid_step_leaves_no_task_exception_unretrieved() -> None:
    async def main() -> list[dict[str, Any]]:
        unhandled: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: unhandled.append(context))
        lost = asyncio.Event()
        store = LosingStore(lost)
        spec = new_run(tenant="t1", thread_id="th1", tools=[ADD])
        agent = Agent(
            ScriptedEngine([call("add", a=1, b=2)]), FunctionExecutor({"add": lambda a, b: a + b}), store
        )
        with pytest.raises(LeaseLostError):
            await agent.run(spec, first_checkpoint(spec, [user_turn("add")]), lost=lost)
        gc.collect()  # an unretrieved exception is reported when its task is collected
        return unhandled

    assert asyncio.run(main()) == []


class SlowFirstCallStore(MemoryStore):
    """The step's first call takes a while to be written, so that later calls are ready before it."""

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        if slot.index == 0:
            await asyncio.sleep(0.05)
        return await super().begin_call(spec, slot, call, delta)


def test_watchers_read_the_text_in_order_and_each_call_after_its_text() -> None:
    # A valid call, a call with invalid arguments (refused: told by its text alone), a malformed block,
    # another valid call, then prose: each call's text rides with it, in the order the model wrote it.
    output = (
        f"First.\n{call('add', a=1, b=2)}\nThen.\n{call('add', a='x', b=2)}\n"
        "<tool_call>\nnot json\n</tool_call>\n"
        f"{call('add', a=3, b=4)}"
    )
    agent, _, _, _, spec, ckpt = setup([output, "Done."])
    store = SlowFirstCallStore()
    agent = Agent(agent._engine, agent._executor, store)
    assert run(agent, spec, ckpt).stop_reason == "answer"
    events = [(e.kind, e.data) for e in store.streams[spec.tenant, spec.run_id]]
    step0 = [
        (kind, data) for kind, data in events if data.get("step") == 0 and kind in ("delta", "tool_call")
    ]
    assert "".join(data["text"] for kind, data in step0 if kind == "delta") == output
    told = ""
    for kind, data in step0:
        if kind == "delta":
            told += data["text"]
        else:  # the call's whole block was told before the call
            block = call("add", **data["arguments"])
            assert block in told, (block, told)
    assert [data["arguments"] for kind, data in step0 if kind == "tool_call"] == [
        {"a": 1, "b": 2},
        {"a": 3, "b": 4},
    ]
