"""``LocalEngine``: the real SmolLM2-135M model behind the ``ChatEngine`` port, streamed from a thread."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from orchestrator.engines import LocalEngine
from orchestrator.local_model import LocalModel
from orchestrator.ports import Chunk, CompletionRequest, Sampling
from toolbox.hermes import parse, render_prompt, validate
from toolbox.hermes.constraint import tool_calls
from toolbox.protocol import UserMessage
from toolbox.schema import tool_spec

pytestmark = pytest.mark.integration
GREEDY = Sampling(temperature=0.0)


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


SPECS = [tool_spec(multiply)]
PROMPT = render_prompt([UserMessage("What is 17 times 23?")], SPECS)
STORY = render_prompt([UserMessage("Tell me a long story about a dragon.")], [])


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel()  # loading costs ~20 s: once for the module


def collect(engine: LocalEngine, request: CompletionRequest) -> list[Chunk]:
    async def main() -> list[Chunk]:
        return [chunk async for chunk in engine.stream(request)]

    return asyncio.run(main())


def test_a_constrained_greedy_call_streams_with_usage_on_the_last_chunk(model: LocalModel) -> None:
    engine = LocalEngine(model)
    request = CompletionRequest(PROMPT, 40, sampling=GREEDY, constraint=tool_calls(SPECS, require=True))
    chunks = collect(engine, request)
    text = "".join(chunk.text for chunk in chunks)
    assert [(c.name, c.arguments) for c in parse(text).tool_calls] == [("multiply", {"a": 17, "b": 23})]
    assert all(validate(call, SPECS) is None for call in parse(text).tool_calls)
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and last.prompt_tokens == model.count_tokens(PROMPT)
    assert last.completion_tokens is not None and 0 < last.completion_tokens <= 40
    assert all(chunk.finish_reason is None for chunk in chunks[:-1]) and len(chunks) > 5
    assert "".join(c.text for c in collect(engine, request)) == text  # greedy is deterministic
    assert engine.model == model.name


def test_max_tokens_and_stop_strings(model: LocalModel) -> None:
    engine = LocalEngine(model)
    chunks = collect(engine, CompletionRequest(STORY, 12, sampling=GREEDY))
    text = "".join(chunk.text for chunk in chunks)
    assert (chunks[-1].finish_reason, chunks[-1].completion_tokens) == ("length", 12)
    stop = text.split()[3]  # a word the greedy output is known to reach
    cut = collect(engine, CompletionRequest(STORY, 12, stop=(stop,), sampling=GREEDY))
    assert "".join(c.text for c in cut) == text[: text.index(stop)]
    assert cut[-1].finish_reason == "stop"


def test_a_seed_makes_sampling_repeatable(model: LocalModel) -> None:
    engine = LocalEngine(model)
    request = CompletionRequest(STORY, 10, sampling=Sampling(temperature=1.0, seed=7))
    assert "".join(c.text for c in collect(engine, request)) == "".join(
        c.text for c in collect(engine, request)
    )


def test_a_consumer_that_stops_reading_stops_the_generation(model: LocalModel) -> None:
    engine = LocalEngine(model)

    async def main() -> int:
        read = 0
        async with aclosing(engine.stream(CompletionRequest(STORY, 500, sampling=GREEDY))) as chunks:
            async for _ in chunks:
                read += 1
                if read == 3:
                    break
        return read

    assert asyncio.run(main()) == 3
    # The stream returned only after its thread let go of the model: it is free at once.
    assert model._lock.acquire(blocking=False)
    model._lock.release()


def test_a_cancelled_task_stops_the_generation(model: LocalModel) -> None:
    engine = LocalEngine(model)

    async def main() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.stream(CompletionRequest(STORY, 500, sampling=GREEDY)):
                first.set()

        task = asyncio.create_task(consume())
        # If generation fails before its first piece, the task ends with that error: raise it now, never
        # wait for a first piece that cannot come.
        started = asyncio.create_task(first.wait())
        await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if task.done():
            task.result()
        assert first.is_set(), "no piece within 60 s"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert model._lock.acquire(blocking=False)
    model._lock.release()


def test_an_unconstrained_engine_ignores_the_constraint(model: LocalModel) -> None:
    engine = LocalEngine(model, constrain=False)
    request = CompletionRequest(PROMPT, 8, constraint=tool_calls(SPECS, require=True))
    assert engine.options(request).constraint is None
    assert LocalEngine(model).options(request).constraint == tool_calls(SPECS, require=True)
