"""What one agent step costs on Redis, counted on a real redis-server (MONITOR and its byte counters), so
that a change that adds writes per step fails here, not in a benchmark nobody re-runs: a tool step is one
BEGIN_CALL (which carries the model's text up to the call) and one END_CALL per call, and one COMMIT; the
answer's step one EMIT (its text) and one COMMIT (which also ends the run); the worker's start is one
script (lease and load) and its end one (DONE). Bytes written per step stay flat whatever the thread's
length."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor
from orchestrator.ports import Limits
from orchestrator.redis import RedisStore, RunQueue
from orchestrator.redis import scripts as redis_scripts
from orchestrator.runs import first_checkpoint, new_run
from tests.integration.redis_monitor import received
from toolbox.hermes import turn
from toolbox.protocol import ToolSpec

LOOKUP = ToolSpec(
    "lookup",
    "Look an item up.",
    {"type": "object", "properties": {"item": {"type": "integer"}}, "required": ["item"]},
)
LIMITS = Limits(max_steps=1000, max_repeats=1000, deadline_s=600)
TOOL_STEPS = 10
#: Measured at 1,771 bytes per step (10 tool steps and the answer, start and end included); a margin for
#: ids and timings of other lengths, none for another write.
BYTES_PER_STEP = 1_950
SOURCES = {
    name: text for name, text in vars(redis_scripts).items() if name.isupper() and isinstance(text, str)
}
SCRIPTS = {hashlib.sha1(text.encode()).hexdigest(): name for name, text in SOURCES.items()}


def script(prompt: str) -> str:
    done = prompt.count("<|im_start|>tool\n")
    if done >= TOOL_STEPS:
        return f"All {done} items are in stock."
    block = f'<tool_call>\n{{"name": "lookup", "arguments": {{"item": {done}}}}}\n</tool_call>'
    return f"Checking item {done} now.\n{block}"


async def _one_run(redis_url: str, history: int, tag: str) -> tuple[Counter[str], float, int]:
    """Runs one conversation as a worker does; returns the scripts clients ran (by name, with any other
    command by its own name), the bytes Redis received per step, and the steps."""
    client = Redis.from_url(redis_url)
    try:
        store = RedisStore(client, worker=f"w-{tag}")
        queue = RunQueue(store.link)
        await queue.ensure_group()
        spec = new_run(
            tenant="budget", thread_id=f"t-{tag}", tools=[LOOKUP], limits=LIMITS, run_id=f"r-{tag}"
        )
        past = [
            turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "words " * 15) for i in range(history)
        ]
        await store.submit(spec, first_checkpoint(spec, []), "Check every item.", earlier=past)
        claims = [c for c in await queue.take(10, block_ms=100) if c.run_id == spec.run_id]
        agent = Agent(ScriptedEngine(script), FunctionExecutor({"lookup": lambda item: {"stock": 3}}), store)
        for text in SOURCES.values():  # loaded before: a first use is two round trips (NOSCRIPT, load)
            await client.script_load(text)
        before = (await client.info("stats"))["total_net_input_bytes"]
        with received(redis_url) as seen:
            loaded = await queue.start(claims[0])
            assert loaded is not None
            outcome = await agent.run(loaded[0], loaded[1])
            assert await queue.done(claims[0])
        after = (await client.info("stats"))["total_net_input_bytes"]
        assert outcome.stop_reason == "answer" and outcome.steps == TOOL_STEPS + 1, outcome
        names = Counter(
            SCRIPTS.get(line.split(" ")[1], "?") if line.lower().startswith("evalsha") else line.split(" ")[0]
            for line in seen.lines
        )
        # The byte counter also counts the INFO that read it, and the monitor's marker: a few dozen bytes.
        return names, (after - before) / outcome.steps, outcome.steps
    finally:
        await client.aclose()


def test_each_step_costs_its_budget_of_redis_commands_and_bytes(redis_url: str) -> None:
    names, per_step, steps = asyncio.run(_one_run(redis_url, 0, "a"))
    expected: dict[str, Any] = {
        "START": 1,
        "EMIT": 1,
        "BEGIN_CALL": TOOL_STEPS,
        "END_CALL": TOOL_STEPS,
        "COMMIT": steps,
        "DONE": 1,
    }
    assert dict(names) == expected
    assert per_step <= BYTES_PER_STEP, per_step


def test_bytes_per_step_do_not_grow_with_the_thread(redis_url: str) -> None:
    _, short, _ = asyncio.run(_one_run(redis_url, 1, "b"))
    _, long, _ = asyncio.run(_one_run(redis_url, 100, "c"))
    assert abs(long - short) <= 0.02 * short, (short, long)
