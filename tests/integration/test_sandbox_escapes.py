"""The security suite: escape probes through the ``python`` tool, judged on the host (workers/sandbox/probes).

Run under bubblewrap (the mechanism in force here) and under the Landlock fallback, which this machine
also supports, so that the fallback is proven too."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest_workers import (
    cold_executor,
    probe_registry,
    require_landlock,
    sandbox_processes,
)
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.sandbox import Mechanism, PooledSandbox, probes
from workers.sandbox.pool import Binding

pytestmark = pytest.mark.integration
_NAMES = probes.names()


def test_the_suite_has_at_least_fifteen_probes() -> None:
    assert len(_NAMES) >= 15


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", _NAMES)
@pytest.mark.parametrize(
    ("mechanism", "binding"),
    [("bubblewrap", "first_use"), ("bubblewrap", "at_start"), ("landlock", "first_use")],
    ids=["bubblewrap-fleet", "bubblewrap-bound-at-start", "landlock"],
)
def test_probe_is_contained(mechanism: Mechanism, binding: Binding, name: str, tmp_path: Path) -> None:
    """Through the pooled fleet (hosts bound to their conversation at first use), and through hosts
    bound at their start (the fallback for a worker that may not clone mounts)."""

    async def main() -> probes.Verdict:
        with probes.bait() as found:
            probe = next(p for p in probes.probes(found) if p.name == name)
            async with cold_executor(probe_registry(), tmp_path, mechanism, binding) as executor:

                async def run(call: ToolCall) -> ToolResult:
                    return await executor.execute(call, "probe")

                verdict = await probes.judge(run, probe, found)
                await executor.sandbox.settle()
                assert sandbox_processes(executor.sandbox.standing()) == [], (
                    "a process of the task survived it"
                )
                return verdict

    verdict = asyncio.run(main())
    assert verdict.contained, f"{name} escaped: {verdict.payload[:2000]}"
    assert verdict.seconds < 10, f"{name} took {verdict.seconds:.1f} s: the limits did not bound it"
    assert subprocess.run(["/bin/true"], check=False).returncode == 0, (
        "the host can no longer start processes"
    )


_SIGNALS = """import os
def attempt(pid, number):
    try:
        os.kill(pid, number)
    except OSError as exc:
        return exc.strerror
    return 'sent'
[attempt({victim}, 9), attempt({victim}, 0), attempt(0, 0), attempt(os.getpid(), 0)]"""


@pytest.mark.timeout(60)
def test_landlock_without_signal_scoping_still_cannot_signal_host_processes(tmp_path: Path) -> None:
    """Landlock scopes signals from ABI 6 (Linux 6.12) only; below it, seccomp lets a call signal itself
    alone, so it cannot kill the worker's other processes (nor ``kill(-1, SIGKILL)`` them all)."""
    require_landlock()

    async def main(victim: int) -> ToolResult:
        registry = probe_registry()
        sandbox = PooledSandbox("landlock", preload=registry.sandbox_modules(), warm=0, landlock_abi=5)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            call = ToolCall("s", "python", {"code": _SIGNALS.format(victim=victim)})
            result = await executor.execute(call, "signals")
            await executor.sandbox.settle()
            return result

    with probes.bait() as found:
        assert found.victim is not None
        result = asyncio.run(main(found.victim.pid))
        assert found.victim.poll() is None, "the call killed a host process"
    denied = "Operation not permitted"
    assert result.content["result"] == [denied, denied, denied, "sent"], result
