"""Chaos run: orchestrator worker processes share one Redis and are killed with SIGKILL at random.

Each run makes one tool call per step; the tool's side effect is a counter in Redis keyed by (run, step),
so an effect that happened twice shows up as a counter above 1. Workers are SIGKILLed at random moments
(mid-generation, mid-tool, mid-commit) and restarted under new ids; their runs are claimed by the others
once their leases lapse. At the end every run must have completed with every step acknowledged once.

    python bench/chaos.py [--runs 40] [--steps 5] [--workers 4] [--kills 20] [--redis URL]

Last line: ``RESULT {"runs", "completed", "lost", "duplicate_effects", "kills", "interrupted", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from redis.asyncio import Redis

from deploy.local_redis import redis_server_binary
from orchestrator.engines import Latency, ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.ports import Limits
from orchestrator.redis_store import RedisStore, RunQueue
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.worker import Worker
from toolbox.protocol import ToolCall, ToolResult, ToolSpec

TENANT = "chaos"
EFFECT = ToolSpec(
    "effect",
    "Do something with a side effect.",
    {
        "type": "object",
        "properties": {"run": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["run", "n"],
    },
)
_RUN = re.compile(r"run ([0-9a-z-]+)")


def script(steps: int) -> Any:
    """Stateless, so any worker resuming a run gets the same answers: one call per step, then an answer."""

    def answer(prompt: str) -> str:
        found = _RUN.search(prompt)
        run = found.group(1) if found else "?"
        done = prompt.count("<|im_start|>tool\n")
        if done >= steps:
            return f"All {done} effects are done for run {run}."
        arguments = json.dumps({"run": run, "n": done})
        block = f'<tool_call>\n{{"name": "effect", "arguments": {arguments}}}\n</tool_call>'
        return f"Step {done}: doing it now.\n{block}"

    return answer


class EffectTool:
    """The side effect: a counter in Redis per (run, step), after a pause so that kills land mid-tool."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        await asyncio.sleep(random.uniform(0, 0.1))
        count = await self._redis.incr(f"chaos:effect:{call.arguments['run']}:{call.arguments['n']}")
        return ToolResult(call.id, call.name, content={"done": call.arguments["n"], "count": count})


async def serve(url: str, worker_id: str, args: argparse.Namespace) -> None:
    redis = Redis.from_url(url)
    store = RedisStore(redis, worker=worker_id)
    queue = RunQueue(store, lease_ms=1000)
    latency = Latency(first_token_s=0.02, per_token_s=args.token_ms / 1000)
    engine = ScriptedEngine(script(args.steps), latency=latency)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await Worker(store, queue, Agent(engine, EffectTool(redis), store), concurrency=args.concurrency).serve(
        stop
    )
    await redis.aclose()


def start_redis(workdir: str) -> tuple[str, subprocess.Popen[bytes]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port)]
    command += ["--save", "", "--appendonly", "no", "--dir", workdir]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    return f"redis://127.0.0.1:{port}/0", process


class Fleet:
    """The worker processes by worker id; a killed one is replaced by a fresh process under a new id."""

    def __init__(self, url: str, args: argparse.Namespace) -> None:
        self._url, self._args, self._born = url, args, 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for _ in range(args.workers):
            self._spawn()

    def _spawn(self) -> None:
        self._born += 1
        worker = f"w{self._born}-{os.getpid()}"
        options = self._args
        command = [sys.executable, __file__, "worker", "--redis", self._url, "--id", worker]
        command += ["--steps", str(options.steps), "--token-ms", str(options.token_ms)]
        command += ["--concurrency", str(options.concurrency)]
        self.processes[worker] = subprocess.Popen(command)

    def kill(self, worker: str) -> None:
        process = self.processes.pop(worker)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self._spawn()

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            process.wait(timeout=30)


async def holders(redis: Redis) -> list[str]:
    """The workers holding a run's lease right now: killing one of them interrupts a run in progress."""
    keys = [key async for key in redis.scan_iter(match=f"cad:t:{TENANT}:run:*:lease")]
    return sorted({value.decode() for value in await redis.mget(keys) if value}) if keys else []


async def submit(store: RedisStore, runs: int) -> list[str]:
    await RunQueue(store).ensure_group()
    ids = []
    for n in range(runs):
        spec = new_run(
            tenant=TENANT, thread_id=f"t{n}", tools=[EFFECT], limits=Limits(deadline_s=3600), run_id=f"r{n}"
        )
        await store.submit(spec, first_checkpoint(spec, []), f"Please do the effects for run {spec.run_id}.")
        ids.append(spec.run_id)
    return ids


async def finished(store: RedisStore, ids: list[str]) -> int:
    return sum([(await store.status(TENANT, run)).get("status") in ("finished", "failed") for run in ids])


async def check(store: RedisStore, ids: list[str], steps: int) -> dict[str, int]:
    """Count completed runs, runs with a lost or doubled step, doubled effects and interrupted calls."""
    redis = store.redis
    completed = lost = duplicates = interrupted = resumed = 0
    for run in ids:
        status = await store.status(TENANT, run)
        completed += status.get("stop_reason") == "answer"
        records = [json.loads(r) for r in await redis.lrange(f"cad:t:{TENANT}:run:{run}:steps", 0, -1)]
        turns = await store.thread(TENANT, f"t{run[1:]}")
        whole = [r["step"] for r in records] == list(range(steps + 1)) and len(turns) == 2 + 2 * steps
        lost += not whole
        for n in range(steps):
            count = int(await redis.get(f"chaos:effect:{run}:{n}") or 0)
            duplicates += count > 1
        ledger = await redis.hvals(f"cad:t:{TENANT}:run:{run}:ledger")
        interrupted += sum(b'"crashed"' in entry for entry in ledger)
        resumed += sum(event.kind == "resumed" for event in await store.events(TENANT, run))
    return {
        "completed": completed,
        "lost": lost,
        "duplicate_effects": duplicates,
        "interrupted": interrupted,
        "resumed": resumed,
    }


async def drive(url: str, args: argparse.Namespace) -> dict[str, Any]:
    redis = Redis.from_url(url)
    store = RedisStore(redis)
    ids = await submit(store, args.runs)
    fleet = Fleet(url, args)
    kills, started = 0, time.monotonic()
    try:
        while await finished(store, ids) < len(ids) and time.monotonic() - started < args.timeout:
            await asyncio.sleep(random.uniform(0.1, 0.8))
            victims = [worker for worker in await holders(redis) if worker in fleet.processes]
            if kills < args.kills and victims:
                fleet.kill(random.choice(victims))
                kills += 1
    finally:
        fleet.stop()
    result: dict[str, Any] = {"runs": len(ids), **await check(store, ids, args.steps), "kills": kills}
    result["seconds"] = round(time.monotonic() - started, 2)
    await redis.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="drive", choices=["drive", "worker"])
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--id", default="w0")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4, help="runs at once per worker")
    parser.add_argument("--token-ms", type=float, default=10.0, help="scripted time per token")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.mode == "worker":
        asyncio.run(serve(args.redis, args.id, args))
        return
    random.seed(args.seed)
    with tempfile.TemporaryDirectory() as workdir:
        server = None
        if not args.redis:
            args.redis, server = start_redis(workdir)
        try:
            result = asyncio.run(drive(args.redis, args))
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
