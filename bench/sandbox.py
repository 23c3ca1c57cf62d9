"""Latency of a trivial ``python`` tool call in the sandbox, cold, warm and pooled, beside a subprocess.

- cold: every call starts its own sandbox host (namespaces, seccomp, interpreter, tool import): hosts
  bound to their conversation at their start, with none kept warm (the fallback binding);
- warm: the pool's fleet had a spare host ready (it forks one between calls), in a conversation that
  has called before, so the call pays for validation, dispatch, binding the scratch, and the answer;
- pooled first call: the same, but every call is a new conversation's first: its scratch volume is made
  (a copy of a pristine image, loop-mounted) and bound to a spare host that was forked before it existed;
- forked: no spare host ready: the call's host is forked from the template for it;
- subprocess: ``python -c CODE`` with no isolation at all, measured in the same run.

All go through the same code (``1 + 1``); the sandboxed ones through the executor, so validation and the
ToolResult are included. Then the escape probes of the security suite are counted. Prints a table, then,
last, one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import PooledSandbox, detect, probes
from workers.sandbox.policy import Limits
from workers.sandbox.pool import Binding
from workers.sandbox.scratch import ScratchStore

CODE = "1 + 1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sandboxed(
    calls: int,
    root: Path,
    series: str,
    *,
    binding: Binding = "first_use",
    spare: int = 1,
    fresh: bool = False,
) -> list[float]:
    """``calls`` timed calls, one at a time; ``fresh``: each in a new conversation."""
    registry = builtin_registry()
    mechanism = detect().mechanism
    sandbox = PooledSandbox(
        mechanism, preload=registry.sandbox_modules(), warm=0, spare=spare, binding=binding
    )
    times: list[float] = []
    async with Executor(registry, sandbox=sandbox, scratch_root=root) as executor:
        task = executor.task(registry.entries["python"], {"code": CODE}, series)
        await sandbox.prewarm(task)  # the template (or, bound at start: nothing), not timed
        for index in range(calls):
            await sandbox.prewarm(task)  # not timed: the pool does this between calls
            conversation = f"{series}-{index}" if fresh else series
            started = time.perf_counter()
            result = await executor.execute(ToolCall(str(index), "python", {"code": CODE}), conversation)
            times.append((time.perf_counter() - started) * 1000)
            assert result.ok and result.content["result"] == 2, result
            await sandbox.settle()
    return times


def plain_subprocess(calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"print({CODE})"], check=True, capture_output=True)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def escapes(root: Path) -> list[probes.Verdict]:
    registry = ToolRegistry()
    limits = Limits(memory_bytes=256 * 1024**2, cpu_seconds=2, wall_seconds=3.0, processes=16)
    registry.add_function("toolbox.tools.python:python", isolation="untrusted", limits=limits)
    sandbox = PooledSandbox(detect().mechanism, preload=registry.sandbox_modules(), warm=0)
    verdicts = []
    async with Executor(registry, sandbox=sandbox, scratch_root=root) as executor:

        async def run(call: ToolCall) -> ToolResult:
            return await executor.execute(call, "probes")

        for name in probes.names():
            with probes.bait() as found:
                probe = next(p for p in probes.probes(found) if p.name == name)
                verdicts.append(await probes.judge(run, probe, found))
                await sandbox.settle()
    return verdicts


def _host_mounts() -> int:
    with open("/proc/self/mountinfo") as mounts:
        return sum(1 for _ in mounts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per series (default 200)")
    args = parser.parse_args()
    # Every mount left in the host's table makes each new sandbox's mount namespace slower to create
    # (1,500 left by interrupted runs doubled the cold start): say how many there are.
    mounts = _host_mounts()
    print(f"isolation: {detect().mechanism}; {args.calls} calls per series; {mounts} host mounts")
    root = Path(tempfile.mkdtemp(prefix="caduceus-bench-"))
    try:
        result = measure(args.calls, root) | {"host_mounts_at_start": mounts}
    finally:  # the bench's scratch volumes go with it (unmounted, deleted), even when interrupted
        ScratchStore(root).sweep(now=math.inf)
        shutil.rmtree(root, ignore_errors=True)
    print("RESULT " + json.dumps(result))


def measure(calls: int, root: Path) -> dict[str, object]:
    cold = asyncio.run(sandboxed(calls, root, "cold", binding="at_start", spare=0))
    warm = asyncio.run(sandboxed(calls, root, "warm"))
    first = asyncio.run(sandboxed(calls, root, "first", fresh=True))
    forked = asyncio.run(sandboxed(calls, root, "forked", spare=0))
    plain = plain_subprocess(calls)
    series = (
        ("cold", cold),
        ("warm", warm),
        ("pooled first", first),
        ("forked", forked),
        ("subprocess", plain),
    )
    print(f"{'series':<14}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for name, values in series:
        p50, p99, mean = percentile(values, 50), percentile(values, 99), statistics.mean(values)
        print(f"{name:<14}{p50:>10.1f}{p99:>10.1f}{mean:>10.1f}")
    verdicts = asyncio.run(escapes(root))
    for verdict in verdicts:
        verdict_word = "contained" if verdict.contained else "ESCAPED  "
        print(f"  {verdict_word}  {verdict.seconds:5.2f} s  {verdict.name}")
    return {
        "isolation": detect().mechanism,
        "cold_p50_ms": round(percentile(cold, 50), 2),
        "cold_p99_ms": round(percentile(cold, 99), 2),
        "warm_p50_ms": round(percentile(warm, 50), 2),
        "warm_p99_ms": round(percentile(warm, 99), 2),
        "pooled_first_call_p50_ms": round(percentile(first, 50), 2),
        "pooled_first_call_p99_ms": round(percentile(first, 99), 2),
        "forked_p50_ms": round(percentile(forked, 50), 2),
        "subprocess_p50_ms": round(percentile(plain, 50), 2),
        "escapes_contained": sum(v.contained for v in verdicts),
        "escapes_total": len(verdicts),
    }


if __name__ == "__main__":
    main()
