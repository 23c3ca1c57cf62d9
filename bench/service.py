"""The whole service under load: N concurrent runs submitted over REST to the local service (Ray Serve, the
orchestrator, sandboxed tool workers, Redis), with the scripted Hermes engine behind Ray Serve LLM playing a
70B on 8 GPUs (about 0.1 s to the first token, 0.013 s per token after it).

Each run offers ``calculator`` and ``files``: the model computes, stores the result (each call in a
sandbox), then answers: three model turns and two tool calls. Measured, from the service's own records:

- runs/s: N over the wall time from the first submission to the last finish;
- p50/p99 run latency: each run's ``finished_at - created_at`` (the API stamps both);
- the share of the runs' wall time spent outside the model and the tools: every step records how long
  its model stream took and how long the step then waited for its tool calls (``model_s``, ``tools_s``);
  the rest of a run's latency is queueing, the loop, Redis and the network between the parts. The tool
  wait includes the call's trip to the tool workers and its wait for a sandbox; so the same load is run
  again without tools (one model turn per run), where everything but the model is the service's own.

Then the sandboxed calls alone, through the tool-worker deployment (its Serve handle): ``N`` concurrent
``python`` calls, each the first of a new conversation (so each makes its scratch volume and binds a host
of the pooled fleet), as ``calls_per_s``; and the floor, ``calls_per_s_floor``: the same burst once the
replica holds ``N`` spare hosts already forked and waiting (``keep_spare``), none forked during it.

    python bench/service.py [--runs 200] [--ttft 0.1] [--per-token 0.013]

Last line: ``RESULT {"runs_per_s", "p50_s", "p99_s", "outside_share", ..., "outside_share_no_tools",
"calls_per_s", "calls_per_s_floor"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from deploy.config import ToolWorkersConfig, load_config
from deploy.local_redis import free_port
from deploy.local_service import APP_NAME, LOCAL_TENANT, local_service
from toolbox.protocol import ToolCall
from workers.sandbox.scratch import ScratchStore

TASK = {"input": "Compute 17 * 23 and store the result.", "tools": ["calculator", "files"], "temperature": 0}
#: The same load without tools: one model turn per run, so nothing but the model and the service itself.
CHAT = {"input": "Say hello.", "temperature": 0}


def _config(ttft: float, per_token: float, runs: int) -> Any:
    model = {
        "preset": "hermes-2-theta-70b",
        "engine": "scripted",
        "scripted_latency": {"first_token_s": ttft, "per_token_s": per_token},
        "max_ongoing_requests": max(64, runs),
    }
    return load_config(
        {
            "models": [model],
            "orchestrator": {"max_concurrent_runs": max(64, runs)},
            "tool_workers": {"max_concurrent_calls": 64},
            "api": {"rate_per_s": 10_000, "burst": 10_000},  # one key drives the whole load
        },
        source="bench",
    )


class Clients:
    """The load generator's HTTP clients: several small connection pools rather than one of 200
    connections, whose bookkeeping (httpcore matches every waiting request against every connection)
    made the generator itself take whole seconds of CPU per burst, from the service it measures."""

    def __init__(self, url: str, key: str, connections: int, *, per_pool: int = 16) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=per_pool)
        pools = max(1, -(-connections // per_pool))
        self._pools = [
            httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) for _ in range(pools)
        ]
        self._next = 0

    def pick(self) -> httpx.AsyncClient:
        self._next = (self._next + 1) % len(self._pools)
        return self._pools[self._next]

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _cpu_ticks() -> int:
    """All CPU time the machine spent working (not idle), in clock ticks."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # less idle and iowait


async def _submit(clients: Clients, task: dict[str, Any]) -> str:
    response = await clients.pick().post("/v1/runs", json=task)
    if response.status_code != 202:
        raise SystemExit(f"submitting a run: HTTP {response.status_code}: {response.text[:500]}")
    run_id: str = response.json()["id"]
    return run_id


async def _wait_all(clients: Clients, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Every run once finished, read in pages of the run list: a few requests a second whatever the number
    of runs, so that watching the load adds next to none to it."""
    pending, done = set(ids), {}
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        for run in await _listed(clients.pick(), len(ids)):
            if run["id"] in pending and run["status"] not in ("queued", "in_progress"):
                done[run["id"]] = run
                pending.discard(run["id"])
    if pending:
        raise SystemExit(f"{len(pending)} runs did not finish within {timeout_s:.0f} s")
    return [done[run_id] for run_id in ids]


async def _listed(client: httpx.AsyncClient, newest: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    after: str | None = None
    while len(runs) < newest:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        response = await client.get("/v1/runs", params=params)
        response.raise_for_status()
        page = response.json()
        runs += page["data"]
        if not page["has_more"] or not page["data"]:
            break
        after = page["data"][-1]["id"]
    return runs


async def _steps(redis: Redis, run_id: str) -> list[dict[str, Any]]:
    raw = await redis.lrange(f"cad:t:{LOCAL_TENANT}:run:{run_id}:steps", 0, -1)
    return [json.loads(item) for item in raw]


async def _measure(url: str, key: str, redis_url: str, runs: int) -> dict[str, Any]:
    """The tool task (the headline figures), then the same load without tools (``*_no_tools``)."""
    clients = Clients(url, key, runs)
    try:
        await _wait_all(clients, [await _submit(clients, TASK)], 300)  # warm: replicas, sandboxes, routers
        result = await _load(clients, redis_url, TASK, runs)
        chat = await _load(clients, redis_url, CHAT, runs)
    finally:
        await clients.aclose()
    keep = ("runs_per_s", "p50_s", "p99_s", "outside_s_per_run", "outside_share", "loadgen_cpu_share")
    return result | {f"{name}_no_tools": chat[name] for name in keep} | await _sandboxed(runs)


async def _sandboxed(calls: int) -> dict[str, Any]:
    """Sandboxed calls per second from ``calls`` new conversations at once, then the same with every
    host already forked and waiting (the floor)."""
    from ray import serve  # noqa: PLC0415 - the service started Ray in this process

    tools = serve.get_deployment_handle("ToolWorkers", app_name=APP_NAME)
    pooled = await _burst(tools, "pooled", calls)
    ready = await tools.keep_spare.remote(calls)
    await tools.keep_spare.remote(0)  # the burst takes the spares forked above; none is forked during it
    floor = await _burst(tools, "floor", calls)
    again = await _burst(tools, "pooled", calls)  # the first burst's conversations, their volumes made
    await tools.keep_spare.remote(ToolWorkersConfig().spare_hosts)  # back to the service's default
    return {
        "calls": calls,
        "calls_per_s": pooled,
        "calls_per_s_floor": floor,
        "calls_vs_floor": round(pooled / floor, 3),
        "calls_per_s_again": again,
        "floor_spares_ready": ready,
    }


async def _burst(tools: Any, prefix: str, calls: int) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            tools.execute.remote(ToolCall(str(n), "python", {"code": "1 + 1"}), f"{prefix}-{n}")
            for n in range(calls)
        )
    )
    seconds = time.perf_counter() - started
    failed = [result for result in results if not result.ok or result.content["result"] != 2]
    if failed:
        raise SystemExit(f"{len(failed)} sandboxed calls failed, e.g. {failed[0]}")
    return round(calls / seconds, 1)


async def _load(clients: Clients, redis_url: str, task: dict[str, Any], runs: int) -> dict[str, Any]:
    """``runs`` runs of ``task`` at once, and the share of the machine's CPU the generator took (this
    process: the submissions, the polling, and the Ray driver that started the service, which is idle)."""
    ticks, own = _cpu_ticks(), time.process_time()
    ids = await asyncio.gather(*(_submit(clients, task) for _ in range(runs)))
    finished = await _wait_all(clients, list(ids), 900)
    share = (time.process_time() - own) * os.sysconf("SC_CLK_TCK") / max(1, _cpu_ticks() - ticks)
    redis = Redis.from_url(redis_url)
    try:
        steps = {run["id"]: await _steps(redis, run["id"]) for run in finished}
    finally:
        await redis.aclose()
    return _figures(finished, steps) | {"loadgen_cpu_share": round(share, 3)}


def _figures(finished: list[dict[str, Any]], steps: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    failed = [run for run in finished if run["status"] != "completed"]
    latency = [run["finished_at"] - run["created_at"] for run in finished]
    model = [sum(step["model_s"] for step in steps[run["id"]]) for run in finished]
    tools = [sum(step["tools_s"] for step in steps[run["id"]]) for run in finished]
    wall = max(run["finished_at"] for run in finished) - min(run["created_at"] for run in finished)
    cut = sorted(latency)
    return {
        "runs": len(finished),
        "failed": len(failed),
        "steps_per_run": statistics.mean(len(steps[run["id"]]) for run in finished),
        "wall_s": round(wall, 2),
        "runs_per_s": round(len(finished) / wall, 2),
        "p50_s": round(statistics.median(latency), 3),
        "p99_s": round(cut[min(len(cut) - 1, int(0.99 * len(cut)))], 3),
        "model_s_per_run": round(statistics.mean(model), 3),
        "tools_s_per_run": round(statistics.mean(tools), 3),
        "outside_s_per_run": round(
            statistics.mean(la - m - t for la, m, t in zip(latency, model, tools, strict=True)), 3
        ),
        "outside_share": round(1 - (sum(model) + sum(tools)) / sum(latency), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--ttft", type=float, default=0.1, help="scripted seconds to the first token")
    parser.add_argument("--per-token", type=float, default=0.013, help="scripted seconds per token")
    args = parser.parse_args()
    config = _config(args.ttft, args.per_token, args.runs)
    # The runs' scratch volumes go in a root of the benchmark's own, unmounted and removed at the end.
    scratch = Path(tempfile.mkdtemp(prefix="caduceus-bench-service-"))
    os.environ["CADUCEUS_SCRATCH_ROOT"] = str(scratch)
    print(
        f"starting the service (scripted 70B: {args.ttft} s TTFT, {args.per_token} s/token) ...", flush=True
    )
    try:
        with local_service(config, port=free_port()) as service:
            print(f"up in {service.seconds_to_start:.0f} s; {args.runs} concurrent runs ...", flush=True)
            result = asyncio.run(_measure(service.url, service.api_key, service.redis_url, args.runs))
    finally:
        ScratchStore(scratch).sweep(now=math.inf)
        shutil.rmtree(scratch, ignore_errors=True)
    result |= {"ttft_s": args.ttft, "per_token_s": args.per_token}
    print(f"\n{'figure':<22}{'value':>12}")
    for name, value in result.items():
        print(f"{name:<22}{value:>12}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
