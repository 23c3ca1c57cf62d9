"""Fault campaign: runs with tool calls in flight while faults of every kind are injected at random moments.

One phase per fault kind, each with runs of its own (its own Redis database and scratch directory) on a
fresh fleet of orchestrator worker processes. Each run makes one call per step to the ``effect`` tool,
which runs in a real sandbox (``workers.executor.Executor``, bubblewrap where it works) and leaves one file
per execution in the run's scratch directory, so an effect that happened twice shows. While the phase's
runs are in flight its fault is injected again and again, at random moments:

- ``worker_kill``: SIGKILL of an orchestrator worker holding a run's lease (replaced under a new id);
- ``tool_kill``: SIGKILL of a tool call's sandbox process mid-call (the task's process or its host);
- ``redis_restart``: Redis stopped (SIGTERM or SIGKILL, at random) and started again on the same port from
  its AOF (``--appendonly yes``, ``--appendfsync`` as the Helm chart sets it unless told otherwise);
- ``redis_stall``: Redis paused (SIGSTOP) for longer than the workers' client timeout, then resumed;
- ``network``: a proxy between the workers and Redis resets every connection, or silences them for good
  (as a peer that vanished without a reset), new connections included for a while;
- ``api_kill``: one of two REST API replicas SIGKILLed (and started again) while clients stream run events
  from them, each client resuming with ``Last-Event-ID`` on a replica that is up.

What is counted is defined in ``chaos_check``. ``CHAOS_DEBUG=1`` prints every run that misses a target
in full, shows the workers' INFO log, and has every worker print what its tasks wait on (SIGUSR1) 30 s
into each phase. Phases start once every worker and API replica serves (the line ``# ... ready after``).

Targets: ``lost``, ``duplicate_effects``, ``dangling_calls``, ``stuck``, ``late``, ``event_anomalies`` and
``stream_mismatches`` all 0, and ``completed == runs``, under every fault kind.

    python bench/chaos.py [--faults worker_kill,tool_kill,...] [--runs 24] [--steps 4] [--injections 10]
        [--injections-of redis_stall=1]

Last line: ``RESULT {"runs", "completed", "lost", "duplicate_effects", "dangling_calls", "stuck", ...,
"within_deadline", "faults": {kind: {"injected", "runs", "completed", ...}}}``.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos_api import Follower, judge, serve_api
from chaos_check import FINAL, Tally, check_run, stream_ids
from chaos_rig import Fleet, Proxy, RedisServer, calls_in_flight
from redis.asyncio import Redis
from redis.exceptions import RedisError

from deploy.local_redis import free_port
from orchestrator.engines import Latency, ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.ports import Limits
from orchestrator.redis import SOCKET_TIMEOUT_S, RedisStore, RunQueue, connect
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.worker import Worker
from toolbox.protocol import ToolSpec
from workers.executor import Executor
from workers.registry import ToolRegistry
from workers.sandbox import PooledSandbox, detect
from workers.sandbox.scratch import ScratchSettings

TENANT = "chaos"
READY_S = 300
FAULTS = ("worker_kill", "tool_kill", "redis_restart", "redis_stall", "network", "api_kill")
_RUN = re.compile(r"the effects for run ([0-9A-Za-z_-]+)")


def registry() -> ToolRegistry:
    tools = ToolRegistry()
    tools.add_function("chaos_effect:effect")
    return tools


EFFECT: ToolSpec = registry().specs()[0]


def script(steps: int) -> Callable[[str], str]:
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


# -- the processes the campaign starts ---------------------------------------------------------------


async def serve_worker(args: argparse.Namespace) -> None:
    """One orchestrator worker process, wired as the service wires one, with the sandboxed tool."""
    redis = connect(args.redis)
    store = RedisStore(redis, worker=args.id)
    latency = Latency(first_token_s=0.02, per_token_s=args.token_ms / 1000)
    engine = ScriptedEngine(script(args.steps), latency=latency)
    tools = registry()
    sandbox = PooledSandbox(detect().mechanism, preload=tools.sandbox_modules(), warm=1, max_keys=8)
    settings = ScratchSettings(quota=False)  # plain directories: no loop-mounted volume per conversation
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # last: it says "serving"
    async with Executor(
        tools, sandbox=sandbox, scratch_root=Path(args.scratch), scratch=settings
    ) as executor:
        queue = RunQueue(store.link, lease_ms=args.lease_ms)
        await Worker(store, queue, Agent(engine, executor, store), concurrency=args.concurrency).serve(stop)
    await redis.aclose()


def _dump_tasks() -> None:
    """What every task of this worker waits on (SIGUSR1), to find a hang."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)


def worker_command(args: argparse.Namespace, url: str, scratch: Path) -> Callable[[str], list[str]]:
    def command(name: str) -> list[str]:
        line = [sys.executable, __file__, "worker", "--redis", url, "--id", name, "--scratch", str(scratch)]
        line += ["--steps", str(args.steps), "--token-ms", str(args.token_ms)]
        return [*line, "--concurrency", str(args.concurrency), "--lease-ms", str(args.lease_ms)]

    return command


class Replicas:
    """The API replicas: processes on fixed ports; a killed one is started again on its port."""

    def __init__(self, url: str, count: int) -> None:
        self.url, self.ports = url, [free_port() for _ in range(count)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            self.start(port)

    def start(self, port: int) -> None:
        line = [sys.executable, __file__, "api", "--redis", self.url, "--port", str(port)]
        self.processes[port] = subprocess.Popen(line)

    def kill(self, port: int) -> None:
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()

    @property
    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]


# -- the campaign ------------------------------------------------------------------------------------


@dataclass
class Phase:
    kind: str
    runs: dict[str, str] = field(default_factory=dict)  # run id -> thread id
    injected: int = 0
    touched: int = 0  # connections a network fault reset or silenced


class Campaign:
    """One Redis (with AOF), the proxy every worker reaches it through, one fleet of workers, two API
    replicas; then one phase per fault kind, each with runs of its own."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir, self.scratch = args, workdir, workdir / "scratch"
        (workdir / "redis").mkdir()
        self.redis = RedisServer(workdir / "redis", appendfsync=args.appendfsync)
        self.proxy = Proxy(self.redis.port)
        self.client_timeout = SOCKET_TIMEOUT_S  # of the service's clients: how long a stall must last

    async def run(self) -> dict[str, dict[str, Any]]:
        self.redis.start()
        await self.proxy.start()
        self.client = Redis.from_url(self.redis.url, socket_timeout=2)
        self.fleet = Fleet("w", self.args.workers, worker_command(self.args, self.proxy.url(), self.scratch))
        self.replicas = Replicas(self.redis.url, 2)
        rows: dict[str, dict[str, Any]] = {}
        try:
            await RunQueue(RedisStore(self.client).link).ensure_group()
            print(f"# workers and API replicas ready after {await self.ready():.1f} s", flush=True)
            for kind in self.args.faults:
                rows[kind] = await self.phase(kind)
                print(_row(kind, rows[kind]), flush=True)
        finally:
            self.replicas.stop()
            self.fleet.stop()
            await self.client.aclose()
            await self.proxy.close()
            self.redis.stop()
        return rows

    async def ready(self) -> float:
        """Wait until every worker reads the queue and every API replica accepts connections: the first
        phase's runs must not spend their deadline on processes still starting (tens of seconds on a loaded
        machine)."""
        started = time.monotonic()
        while time.monotonic() - started < READY_S:
            if self.fleet.serving() and await _listening(self.replicas.ports):
                return time.monotonic() - started
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the workers and API replicas were not ready within {READY_S} s")

    async def phase(self, kind: str) -> dict[str, Any]:
        started = time.monotonic()
        phase = Phase(kind, await submit(RedisStore(self.client), kind, self.args))
        followers = [Follower(run) for run in phase.runs] if kind == "api_kill" else []
        following = asyncio.ensure_future(self.follow(followers))
        stop = asyncio.Event()
        injector = asyncio.ensure_future(self.inject(phase, stop))
        if os.environ.get("CHAOS_DEBUG"):  # what every worker waits on, once the phase is slow
            asyncio.get_running_loop().call_later(30, self.fleet.signal, signal.SIGUSR1)
        try:
            await wait_final(
                self.client, list(phase.runs), time.time() + self.args.deadline + self.args.grace
            )
        finally:
            stop.set()
            await injector
            self.heal()
        with suppress(TimeoutError):
            await asyncio.wait_for(following, 15)  # the last events of the last runs
        following.cancel()
        row = await self.judge(phase, followers)
        row["seconds"] = round(time.monotonic() - started, 1)
        return row

    async def follow(self, followers: list[Follower]) -> None:
        give_up = asyncio.get_running_loop().time() + self.args.deadline + self.args.grace
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
            await asyncio.gather(*(f.follow(client, self.replicas.bases, give_up) for f in followers))

    async def judge(self, phase: Phase, followers: list[Follower]) -> dict[str, Any]:
        tally = Tally()
        for run, thread in phase.runs.items():
            tally.add(await check_run(self.client, TENANT, (run, thread), self.args.steps, self.scratch))
        row: dict[str, Any] = {"injected": phase.injected, **tally.as_dict()}
        if phase.kind == "network":
            row["connections_hit"] = phase.touched
        if followers:
            bad = [f for f in followers if not judge(f, await stream_ids(self.client, TENANT, f.run_id))]
            row["stream_mismatches"] = len(bad)
            row["stream_resumes"] = sum(f.resumes for f in followers)
        return row

    def heal(self) -> None:
        """Whatever the last fault left broken is mended, so that the phase can be judged."""
        if self.redis.process is None:
            self.redis.start()
        self.redis.resume()
        self.proxy.cut()  # silenced connections end; the workers connect again

    async def inject(self, phase: Phase, stop: asyncio.Event) -> None:
        fault = getattr(self, f"_{phase.kind}")
        low, high = self.args.gap
        injections = self.args.injections_of.get(phase.kind, self.args.injections)
        while phase.injected < injections and not stop.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(low, high))
            if not stop.is_set() and await fault(phase):
                phase.injected += 1

    async def _worker_kill(self, phase: Phase) -> bool:
        keys = [f"cad:t:{TENANT}:run:{run}:lease" for run in phase.runs]
        with suppress(RedisError, OSError):
            holders = {value.decode() for value in await self.client.mget(keys) if value}
            victims = sorted(holders & set(self.fleet.processes))
            if victims:
                self.fleet.kill(random.choice(victims))
                return True
        return False

    async def _tool_kill(self, phase: Phase) -> bool:
        calls = calls_in_flight({process.pid for process in self.fleet.processes.values()})
        if not calls:
            return False
        with suppress(ProcessLookupError):  # the call may have ended meanwhile
            os.kill(random.choice(random.choice(calls)), signal.SIGKILL)  # the task's process, or its host
        return True

    async def _redis_restart(self, phase: Phase) -> bool:
        how = random.choice((signal.SIGTERM, signal.SIGKILL))
        await asyncio.to_thread(self.redis.restart, how, random.uniform(0.2, 1.5))
        return True

    async def _redis_stall(self, phase: Phase) -> bool:
        self.redis.pause()
        await asyncio.sleep(self.client_timeout + random.uniform(0.5, 2.0))
        self.redis.resume()
        return True

    async def _network(self, phase: Phase) -> bool:
        if random.random() < 0.5:
            phase.touched += self.proxy.cut()
        else:
            phase.touched += self.proxy.blackhole(random.uniform(0.5, 2.0))
        return True

    async def _api_kill(self, phase: Phase) -> bool:
        port = random.choice(self.replicas.ports)
        self.replicas.kill(port)
        await asyncio.sleep(random.uniform(0.2, 1.0))
        self.replicas.start(port)
        return True


async def _listening(ports: list[int]) -> bool:
    for port in ports:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
    return True


async def submit(store: RedisStore, kind: str, args: argparse.Namespace) -> dict[str, str]:
    runs = {}
    for n in range(args.runs):
        run, thread = f"{kind}-r{n}", f"{kind}-t{n}"
        limits = Limits(deadline_s=args.deadline, max_steps=args.steps + 2)
        spec = new_run(tenant=TENANT, thread_id=thread, tools=[EFFECT], limits=limits, run_id=run)
        await store.submit(spec, first_checkpoint(spec, []), f"Please do the effects for run {run}.")
        runs[run] = thread
    return runs


async def wait_final(client: Redis, runs: list[str], until: float) -> None:
    """Until every run is in a final state, or ``until`` (wall clock) passes; Redis may be down meanwhile."""
    while time.time() < until:
        with suppress(RedisError, OSError):
            async with client.pipeline(transaction=False) as pipe:
                for run in runs:
                    pipe.hget(f"cad:t:{TENANT}:run:{run}", "status")
                statuses = await pipe.execute()
            if all(status and status.decode() in FINAL for status in statuses):
                return
        await asyncio.sleep(0.25)


COLUMNS = ("injected", "runs", "completed", "lost", "duplicate_effects", "dangling_calls", "stuck", "late")
COLUMNS += ("tool_errors", "resumed", "event_anomalies", "seconds")
EXTRA = ("connections_hit", "stream_mismatches", "stream_resumes")


def _row(kind: str, row: dict[str, Any]) -> str:
    cells = "".join(f"{row.get(name, ''):>{max(len(name), 4) + 1}}" for name in COLUMNS)
    extra = "".join(f"  {name}={row[name]}" for name in EXTRA if name in row)
    return f"{kind:<14}{cells}{extra}"


def summary(rows: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for name in ("runs", "completed", "lost", "duplicate_effects", "dangling_calls", "stuck", "late"):
        totals[name] = sum(row[name] for row in rows.values())
    totals["event_anomalies"] = sum(row["event_anomalies"] for row in rows.values())
    totals["stream_mismatches"] = sum(row.get("stream_mismatches", 0) for row in rows.values())
    totals["within_deadline"] = totals["stuck"] == 0 and totals["late"] == 0
    totals["kills"] = rows.get("worker_kill", {}).get("injected", 0)
    totals["resumed"] = sum(row["resumed"] for row in rows.values())
    totals["faults"] = rows
    totals["seconds"] = round(seconds, 1)
    return totals


def _counts(text: str) -> dict[str, int]:
    """``kind=N,kind=N`` as a dict."""
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(pair) != 2 or pair[0] not in FAULTS or not pair[1].isdigit() for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected kind=N[,kind=N...] with kinds from {', '.join(FAULTS)}")
    return {kind: int(count) for kind, count in pairs}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("mode", nargs="?", default="drive", choices=["drive", "worker", "api"])
    parser.add_argument("--faults", type=lambda text: text.split(","), default=list(FAULTS))
    parser.add_argument("--runs", type=int, default=24, help="runs per fault kind")
    parser.add_argument("--steps", type=int, default=4, help="tool calls per run")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="runs at once per worker")
    parser.add_argument("--injections", type=int, default=10, help="faults injected per kind")
    parser.add_argument(
        "--injections-of",
        type=_counts,
        default={},
        help="fewer faults of some kinds, e.g. redis_stall=1 (a stall lasts past the client timeout)",
    )
    parser.add_argument("--gap", type=float, nargs=2, default=(0.3, 1.2), help="seconds between faults")
    parser.add_argument("--token-ms", type=float, default=5.0, help="scripted time per token")
    parser.add_argument("--lease-ms", type=int, default=1000)
    parser.add_argument("--appendfsync", default="everysec", choices=["always", "everysec", "no"])
    parser.add_argument("--deadline", type=float, default=90.0, help="each run's deadline, seconds")
    parser.add_argument("--grace", type=float, default=10.0, help="past the deadline before 'stuck'")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--redis", default="")
    parser.add_argument("--id", default="w0")
    parser.add_argument("--scratch", default="")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return args


def main() -> None:
    args = parse()
    logging.basicConfig(level=logging.INFO if os.environ.get("CHAOS_DEBUG") else logging.ERROR)
    if args.mode == "worker":
        asyncio.run(serve_worker(args))
        return
    if args.mode == "api":
        asyncio.run(serve_api(args.redis, args.port, TENANT, [EFFECT]))
        return
    random.seed(args.seed)
    started = time.monotonic()
    print(f"isolation: {detect().mechanism}; {args.runs} runs x {args.steps} calls per fault kind")
    print(f"{'fault':<14}" + "".join(f"{name:>{max(len(name), 4) + 1}}" for name in COLUMNS), flush=True)
    with tempfile.TemporaryDirectory(prefix="caduceus-chaos-") as workdir:
        rows = asyncio.run(Campaign(args, Path(workdir)).run())
    print("RESULT " + json.dumps(summary(rows, time.monotonic() - started)))


if __name__ == "__main__":
    main()
