"""Shared fixtures of the workers tests: real sandboxes on this machine, nothing mocked.

Loaded by the workers test modules with ``from tests.integration.conftest_workers import *``-free explicit
imports. The sandbox is the one ``caduceus doctor`` reports; the suite fails loudly when it is not
bubblewrap, because the security tests are written to prove that isolation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

from workers.executor import Executor
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import Mechanism, PooledSandbox, detect, landlock
from workers.sandbox.policy import Limits
from workers.sandbox.pool import Binding

#: Tight limits, so that every probe is bounded in time.
PROBE_LIMITS = Limits(memory_bytes=256 * 1024**2, cpu_seconds=2, wall_seconds=3.0, processes=16)


def require_landlock() -> None:
    problem = landlock.problem()
    if problem is not None:
        pytest.fail(f"Landlock is required for the fallback tests: {problem}")


def require_bubblewrap() -> None:
    found = detect()
    if found.mechanism != "bubblewrap":
        pytest.fail(f"bubblewrap isolation is required for these tests; doctor says: {found.reasons}")


def sandbox_processes(standing: Iterable[int] = ()) -> list[str]:
    """Command lines of this test process's descendants that are sandbox hosts or bwrap, but for the
    ``standing`` ones (``PooledSandbox.standing()``: the processes a pool keeps between calls)."""
    parents: dict[int, int] = {}
    lines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if entry.isdigit():
                stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(stat[1])
                lines[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
    found, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    kept = set(standing)
    return [
        lines[pid]
        for pid in found - kept
        if "sandboxhost" in lines.get(pid, "") or "bwrap" in lines.get(pid, "")
    ]


def probe_registry() -> ToolRegistry:
    registry = ToolRegistry()
    registry.add_function("toolbox.tools.python:python", isolation="untrusted", limits=PROBE_LIMITS)
    return registry


@contextlib.asynccontextmanager
async def cold_executor(
    registry: ToolRegistry, scratch_root: Path, mechanism: Mechanism = "bubblewrap", binding: Binding = "auto"
) -> AsyncIterator[Executor]:
    """An executor whose sandbox keeps no spare or warm hosts, so that after a call no sandbox process
    may exist but the pool's templates (``PooledSandbox.standing``)."""
    require_bubblewrap() if mechanism == "bubblewrap" else require_landlock()
    sandbox = PooledSandbox(mechanism, preload=registry.sandbox_modules(), warm=0, binding=binding)
    async with Executor(registry, sandbox=sandbox, scratch_root=scratch_root) as executor:
        yield executor


@pytest.fixture
def builtins() -> Iterator[ToolRegistry]:
    yield builtin_registry()
