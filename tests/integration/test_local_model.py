"""The real SmolLM2-135M GGUF model on the CPU, with and without constrained tool calls."""

from __future__ import annotations

import pytest

from orchestrator.local_model import GenerateOptions, LocalModel, LocalModelError
from toolbox.hermes import STOP, parse, render_prompt, validate
from toolbox.hermes.constraint import tool_calls
from toolbox.protocol import UserMessage
from toolbox.schema import tool_spec


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression.

    Args:
        expression: The expression, for example "2 * (3 + 4)".
    """
    return 0.0


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel()


def _run(model: LocalModel, prompt: str, options: GenerateOptions) -> tuple[str, str | None, int]:
    pieces = list(model.generate(prompt, options))
    return "".join(p.text for p in pieces), pieces[-1].finish_reason, pieces[-1].completion_tokens


def test_constrained_greedy_call_is_valid_and_deterministic(model: LocalModel) -> None:
    specs = [tool_spec(multiply)]
    prompt = render_prompt([UserMessage("What is 17 times 23?")], specs)
    options = GenerateOptions(max_tokens=30, stop=STOP, constraint=tool_calls(specs, require=True))
    text, _, _ = _run(model, prompt, options)
    turn = parse(text)
    assert [(call.name, call.arguments) for call in turn.tool_calls] == [("multiply", {"a": 17, "b": 23})]
    assert all(validate(call, specs) is None for call in turn.tool_calls)
    assert _run(model, prompt, options)[0] == text


def test_the_grammar_holds_even_when_the_model_wanders(model: LocalModel) -> None:
    specs = [tool_spec(calculator)]
    prompt = render_prompt([UserMessage("What is 17 * 23? Use the calculator.")], specs)
    options = GenerateOptions(max_tokens=24, stop=STOP, constraint=tool_calls(specs, require=True))
    text, reason, tokens = _run(model, prompt, options)  # every token passed the matcher, or it raised
    assert text.startswith('<tool_call>\n{"name": "calculator", "arguments": {"expression":')
    assert "</tool_call>" not in text.split('"expression":', 1)[1] or parse(text).tool_calls
    assert (reason, tokens) == ("length", 24) or parse(text).tool_calls


def test_unconstrained_generation_stops_at_the_end_of_turn(model: LocalModel) -> None:
    prompt = render_prompt([UserMessage("What is 17 * 23?")], [tool_spec(multiply)])
    text, reason, tokens = _run(model, prompt, GenerateOptions(max_tokens=80, stop=STOP))
    assert reason == "stop"
    assert 0 < tokens < 80
    assert "<|im_end|>" not in text


def test_stop_strings_cut_the_text(model: LocalModel) -> None:
    prompt = render_prompt([UserMessage("Count from 1 to 10, separated by commas.")])
    text, reason, _ = _run(model, prompt, GenerateOptions(max_tokens=40, stop=("5",)))
    assert reason == "stop"
    assert "5" not in text


def test_ignore_eos_produces_exactly_max_tokens(model: LocalModel) -> None:
    prompt = render_prompt([UserMessage("Hi")])
    assert _run(model, prompt, GenerateOptions(max_tokens=12, ignore_eos=True))[1:] == ("length", 12)


def test_a_missing_model_is_a_clear_error(tmp_path: object) -> None:
    with pytest.raises(LocalModelError, match="no model at"):
        LocalModel("/nonexistent/model.gguf")
