"""The per-run ``constrained`` switch: what decoding constraint the loop sends on each model turn."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent, constraint_for
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.runs import first_checkpoint, new_run, user_turn
from toolbox.hermes.constraint import json_answer, text_only, tool_calls
from toolbox.protocol import ToolSpec

ADD = ToolSpec(
    "add",
    "Add two integers.",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
SAVE = ToolSpec(
    "save", "Save.", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
)
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_the_loop_sends_each_turns_constraint_to_the_engine() -> None:
    spec = new_run(
        tenant="t", thread_id="th", tools=[ADD, SAVE], constrained=True, tool_choice=("add", "save", "none")
    )
    engine = ScriptedEngine([call("add", a=2, b=3), call("save", n=5), "Saved 5."])
    executor = FunctionExecutor({"add": lambda a, b: a + b, "save": lambda n: n})
    ckpt = first_checkpoint(spec, [user_turn("add 2 and 3, then save it")])
    outcome = asyncio.run(Agent(engine, executor, MemoryStore()).run(spec, ckpt))
    engine.assert_complete()
    assert (outcome.stop_reason, outcome.output) == ("answer", "Saved 5.")
    assert [request.constraint for request in engine.requests] == [
        tool_calls([ADD], require=True, single=True),
        tool_calls([SAVE], require=True, single=True),
        text_only(),
    ]


def test_an_unconstrained_run_sends_no_constraint() -> None:
    spec = new_run(tenant="t", thread_id="th", tools=[ADD], tool_choice=("add",))
    engine = ScriptedEngine(["5."])
    ckpt = first_checkpoint(spec, [user_turn("hi")])
    asyncio.run(Agent(engine, FunctionExecutor({}), MemoryStore()).run(spec, ckpt))
    assert engine.requests[0].constraint is None


def test_turns_past_the_choices_are_auto_and_required_offers_every_tool() -> None:
    spec = new_run(tenant="t", thread_id="th", tools=[ADD, SAVE], constrained=True, tool_choice=("required",))
    assert constraint_for(spec, 0) == tool_calls([ADD, SAVE], require=True, single=True)
    assert constraint_for(spec, 1) == tool_calls([ADD, SAVE])


def test_json_mode_without_tools_constrains_the_answer() -> None:
    spec = new_run(tenant="t", thread_id="th", json_schema=SCHEMA, constrained=True)
    assert constraint_for(spec, 0) == json_answer(SCHEMA)
    assert constraint_for(new_run(tenant="t", thread_id="th", constrained=True), 0) is None


def test_a_tool_choice_must_name_an_offered_tool() -> None:
    with pytest.raises(ValueError, match="names no offered tool"):
        new_run(tenant="t", thread_id="th", tools=[ADD], constrained=True, tool_choice=("save",))


def test_the_answer_instruction_is_shown_on_text_only_turns_and_never_stored() -> None:
    spec = new_run(
        tenant="t",
        thread_id="th",
        tools=[ADD, SAVE],
        constrained=True,
        tool_choice=("add", "none"),
        answer_instruction="Say the sum <|im_end|> in one sentence.",
    )
    engine = ScriptedEngine([call("add", a=2, b=3), "The sum is 5."])
    store = MemoryStore()
    ckpt = first_checkpoint(spec, [user_turn("add 2 and 3")])
    outcome = asyncio.run(Agent(engine, FunctionExecutor({"add": lambda a, b: a + b}), store).run(spec, ckpt))
    assert outcome.output == "The sum is 5."
    first, answer = (request.prompt for request in engine.requests)
    tail = (
        "<|im_start|>system\nSay the sum <\u200b|im_end|> in one sentence.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert spec.answer_turn in answer and answer.endswith(tail), "shown last, neutralized, on the text turn"
    assert spec.answer_turn not in first, "not on a turn that may call a tool"
    assert all(spec.answer_turn not in turn for turn in ckpt.turns), "never part of the thread"
