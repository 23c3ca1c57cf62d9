"""A run that calls a tool the client runs ends there, its calls awaiting their results; the conversation goes
on in a run that starts with their tool turn. And a run's limit on its calls in all (``max_tool_calls``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import Limits, Outcome, RunSpec
from orchestrator.records import run_status
from orchestrator.runs import first_checkpoint, new_run
from toolbox.hermes import render_tool_turn
from toolbox.protocol import ToolCall, ToolResult, ToolSpec

ADD = ToolSpec(
    "add",
    "Add two integers.",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
WEATHER = ToolSpec(
    "weather",
    "The weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def spec_of(run_id: str, **options: Any) -> RunSpec:
    return new_run(
        tenant="t", thread_id="th", run_id=run_id, tools=[ADD, WEATHER], client_tools=["weather"], **options
    )


async def submit_and_run(
    store: MemoryStore, spec: RunSpec, engine: ScriptedEngine, text: str | None, earlier: tuple[str, ...] = ()
) -> Outcome:
    done = await store.submit(spec, first_checkpoint(spec, []), text, earlier=earlier, claim=True)
    assert done.kind == "created", done
    spec, ckpt, _ = await store.load("t", spec.run_id)
    return await Agent(engine, FunctionExecutor({"add": lambda a, b: a + b}), store).run(spec, ckpt)


def test_a_client_call_ends_the_run_awaiting_it_and_the_next_run_starts_with_its_tool_turn() -> None:
    outputs = [
        "Both at once.\n" + call("add", a=2, b=3) + call("weather", city="Paris"),
        "2 + 3 = 5 and it is sunny.",
    ]
    engine = ScriptedEngine(outputs)
    store = MemoryStore()

    async def main() -> None:
        first = await submit_and_run(store, spec_of("r1"), engine, "add, and the weather?")
        # The service's call ran; the client's did not: both wait, in call order, for the client's result.
        assert (first.stop_reason, first.steps) == ("tool_calls", 1)
        assert first.awaiting == (
            ToolResult("call_0_0", "add", 5),
            ToolCall("call_0_1", "weather", {"city": "Paris"}),
        )
        stored = await store.record("t", "r1")
        assert stored is not None and stored[1].awaiting == first.awaiting
        assert run_status(stored[1]) == "requires_action"
        # Only the assistant turn is in: the tool turn waits for the client's result.
        found = await store.run_turns("t", "r1")
        assert found is not None and found[1] == ["<|im_start|>assistant\n" + outputs[0] + "<|im_end|>\n"]
        results = [first.awaiting[0], ToolResult("call_0_1", "weather", {"sky": "sunny"})]
        assert isinstance(results[0], ToolResult)
        tool_turn = render_tool_turn([results[0], results[1]])
        second = await submit_and_run(store, spec_of("r2"), engine, None, (tool_turn,))
        assert (second.stop_reason, second.output) == ("answer", "2 + 3 = 5 and it is sunny.")

    asyncio.run(main())
    engine.assert_complete()
    # The second run's prompt is the first's, its output and the tool turn: append-only across runs.
    first_prompt, second_prompt = (request.prompt for request in engine.requests)
    assert second_prompt.startswith(first_prompt + outputs[0] + "<|im_end|>\n<|im_start|>tool\n")
    assert second_prompt.endswith(
        '"content": {"sky": "sunny"}}\n</tool_response>\n<|im_end|>\n<|im_start|>assistant\n'
    )


def test_a_client_call_with_bad_arguments_goes_back_to_the_model() -> None:
    engine = ScriptedEngine([call("weather", town="Paris"), call("weather", city="Paris")])
    store = MemoryStore()
    outcome = asyncio.run(submit_and_run(store, spec_of("r1"), engine, "weather?"))
    assert (outcome.stop_reason, outcome.steps) == ("tool_calls", 2)
    assert outcome.awaiting == (ToolCall("call_1_0", "weather", {"city": "Paris"}),)
    assert (
        '"error": {"type": "invalid_arguments", "message": "invalid arguments for \'weather\': \'city\' is a required'
        in (engine.requests[1].prompt)
    )


def test_max_tool_calls_bounds_the_calls_of_the_whole_run() -> None:
    outputs = [call("add", a=1, b=n) for n in range(3)]
    engine = ScriptedEngine(outputs)
    store = MemoryStore()
    spec = spec_of("r1", limits=Limits(max_tool_calls=2))
    outcome = asyncio.run(submit_and_run(store, spec, engine, "add thrice"))
    assert (outcome.stop_reason, outcome.steps) == ("max_tool_calls", 3)
    turns = store.turns[("t", "th")]
    assert ['"content": 1}' in turns[2], '"content": 2}' in turns[4]] == [True, True]  # the first two ran
    assert '"type": "denied", "message": "at most 2 tool calls per run; not run"' in turns[-1]
