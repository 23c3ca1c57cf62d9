"""Limits per call and per conversation, on real sandboxes: the call's cgroup (memory, processes, CPU share)
bounds all its processes together, each conversation's scratch has a disk quota, and unused scratch
expires."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest_workers import require_bubblewrap, require_landlock, sandbox_processes
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import Mechanism, PooledSandbox
from workers.sandbox.policy import Limits
from workers.sandbox.scratch import ScratchSettings, ScratchStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
MiB = 1024 * 1024

# Three processes of 300 MiB each: every one is under a per-process limit of 512 MiB, together they are not.
_THREE_FORKS = """import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = bytearray(300 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(30)
        os._exit(0)
    children.append(pid)
[os.waitpid(pid, 0)[1] for pid in children]"""


def _python(limits: Limits) -> ToolRegistry:
    registry = ToolRegistry()
    registry.add_function("toolbox.tools.python:python", isolation="untrusted", limits=limits)
    return registry


async def _calls(executor: Executor, *calls: tuple[str, dict[str, Any], str]) -> list[ToolResult]:
    results = [await executor.execute(ToolCall(f"c{i}", n, a), c) for i, (n, a, c) in enumerate(calls)]
    await executor.sandbox.settle()
    return results


@pytest.mark.parametrize("mechanism", ["bubblewrap", "landlock"])
def test_a_call_whose_processes_together_pass_its_memory_limit_is_killed(
    tmp_path: Path, mechanism: Mechanism
) -> None:
    require_bubblewrap() if mechanism == "bubblewrap" else require_landlock()

    async def main() -> list[ToolResult]:
        registry = _python(Limits(memory_bytes=512 * MiB, wall_seconds=120.0))
        sandbox = PooledSandbox(mechanism, preload=registry.sandbox_modules(), warm=0)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            results = await _calls(
                executor, ("python", {"code": _THREE_FORKS}, "c"), ("python", {"code": "6 * 7"}, "c")
            )
            assert sandbox_processes(sandbox.standing()) == [], "a process of the killed call survived it"
            return results

    killed, after = asyncio.run(main())
    assert killed.error is not None and killed.error.type == "out_of_memory", killed
    assert "together passed its memory limit of 512 MiB" in killed.error.message
    assert after.content["result"] == 42, "the next call runs normally"


def test_every_process_of_a_call_runs_in_a_cgroup_with_the_calls_limits(tmp_path: Path) -> None:
    registry = ToolRegistry()
    limits = Limits(memory_bytes=300 * MiB, processes=7, cpus=0.5)
    registry.add_function("workers_user_tools:my_cgroup_limits", limits=limits)

    async def main() -> list[ToolResult]:
        # The plain process mechanism, because only there can the tool read /sys to report its cgroup.
        sandbox = PooledSandbox("process", preload=registry.sandbox_modules(), warm=0)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            return await _calls(executor, ("my_cgroup_limits", {}, "c"))

    [result] = asyncio.run(main())
    found = result.content
    assert found["memory"] == str(300 * MiB)
    assert found["pids"] == "9"  # the call's 7, the host and bwrap's init
    assert found["cpu"] in ("50000", "50000 100000")


def _files(root: Path) -> list[str]:
    return sorted(os.listdir(root))


def test_a_call_writing_past_the_scratch_quota_fails_and_its_files_are_removed(tmp_path: Path) -> None:
    write = "for name in {names!r}:\n    open(name, 'wb').write(b'x' * {size})\n'written'"
    calls = [
        ("files", {"action": "write", "path": "notes.txt", "content": "keep me"}, "q"),
        ("python", {"code": write.format(names=["a.bin", "b.bin", "c.bin"], size=4 * MiB)}, "q"),
        ("python", {"code": write.format(names=["huge.bin"], size=200 * MiB)}, "q"),
        ("python", {"code": "import os\nsorted(os.listdir('.'))"}, "q"),
    ]

    async def main() -> list[ToolResult]:
        registry = builtin_registry()
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=0)
        settings = ScratchSettings(quota_bytes=8 * MiB)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path, scratch=settings) as executor:
            return await _calls(executor, *calls)

    require_bubblewrap()
    notes, spread, huge, listing = asyncio.run(main())
    assert notes.ok
    for result in (spread, huge):
        assert result.error is not None and result.error.type == "denied", result
        assert "scratch quota of 8 MiB" in result.error.message
    assert "a.bin, b.bin, c.bin" in spread.error.message  # type: ignore[union-attr]
    assert "huge.bin" in huge.error.message  # type: ignore[union-attr]
    assert listing.content["result"] == ["notes.txt"]
    assert (tmp_path / "q" / "notes.txt").read_text() == "keep me"
    # The space is given back: the volume's image holds on the host's disk little more than the notes.
    os.sync()
    image = tmp_path / ".caduceus" / "q.img"
    assert image.stat().st_blocks * 512 < 4 * MiB


def test_files_written_just_before_a_call_over_the_quota_are_not_taken_for_its_own(tmp_path: Path) -> None:
    """Files carry the kernel's coarse clock (4 ms ticks): a file that the call before wrote in the tick in
    which the next call starts must not look written by it, and go when that call's files are removed."""
    calls: list[tuple[str, dict[str, Any], str]] = []
    for n in range(8):
        calls.append(("files", {"action": "write", "path": f"kept{n}.txt", "content": "keep me"}, "q"))
        calls.append(("python", {"code": "open('big.bin', 'wb').write(b'x' * (9 << 20))"}, "q"))

    async def main() -> list[ToolResult]:
        registry = builtin_registry()
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=1)
        settings = ScratchSettings(quota_bytes=8 * MiB)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path, scratch=settings) as executor:
            return await _calls(executor, *calls)

    require_bubblewrap()
    results = asyncio.run(main())
    assert [r.error.type if r.error else None for r in results] == [None, "denied"] * 8
    kept = sorted(path.name for path in (tmp_path / "q").iterdir() if path.suffix == ".txt")
    assert kept == [f"kept{n}.txt" for n in range(8)]


def test_unused_scratch_is_unmounted_then_deleted_but_never_while_a_worker_holds_it(tmp_path: Path) -> None:
    settings = ScratchSettings(quota_bytes=8 * MiB, idle_seconds=600.0, ttl_seconds=3600.0)
    write = {"action": "write", "path": "kept.txt", "content": "still here"}

    async def main() -> list[str]:
        registry = builtin_registry()
        async with Executor(
            registry, sandbox=PooledSandbox("bubblewrap", warm=0), scratch_root=tmp_path, scratch=settings
        ) as holder:
            await _calls(holder, ("files", write, "held"))
            async with Executor(
                registry, sandbox=PooledSandbox("bubblewrap", warm=0), scratch_root=tmp_path, scratch=settings
            ) as first:
                for conversation in ("expired", "idle", "fresh"):
                    await _calls(first, ("files", write, conversation))
            now = time.time()
            for conversation, age in (("expired", 7200), ("idle", 1200), ("fresh", 0), ("held", 7200)):
                lock = tmp_path / ".caduceus" / f"{conversation}.lock"
                os.utime(lock, (now - age, now - age))
            async with Executor(
                registry, sandbox=PooledSandbox("bubblewrap", warm=0), scratch_root=tmp_path, scratch=settings
            ) as second:
                done = await second.sweep()
                [reread] = await _calls(second, ("files", {"action": "read", "path": "kept.txt"}, "idle"))
                assert reread.content == "still here", "an unmounted volume keeps its files"
            return done

    require_bubblewrap()
    done = asyncio.run(main())
    assert sorted(done) == ["deleted expired", "unmounted idle"]
    state = tmp_path / ".caduceus"
    assert not (tmp_path / "expired").exists()
    assert not (state / "expired.img").exists() and not (state / "expired.lock").exists()
    assert os.path.ismount(tmp_path / "fresh") and (tmp_path / "held" / "kept.txt").exists()


def test_untrusted_tools_are_refused_where_a_call_cannot_be_bounded_unless_the_operator_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_bubblewrap()
    unbounded = ScratchSettings(quota=False)

    async def main() -> list[ToolResult]:
        registry = builtin_registry()
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=0)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path, scratch=unbounded) as executor:
            return await _calls(
                executor, ("python", {"code": "1 + 1"}, "u"), ("calculator", {"expression": "2 * 3"}, "u")
            )

    refused, calculated = asyncio.run(main())
    assert refused.error is not None and refused.error.type == "denied"
    assert "cannot bound a call as a whole" in refused.error.message and "quota" in refused.error.message
    assert calculated.content == 6, "tools that run no model-written code still run, with a warning"
    monkeypatch.setenv("CADUCEUS_ALLOW_UNBOUNDED", "1")
    allowed, _ = asyncio.run(main())
    assert allowed.content["result"] == 2


def test_an_idle_conversation_is_let_go_only_after_its_warm_sandboxes(tmp_path: Path) -> None:
    """A warm host bound at its start binds its conversation's volume: it is stopped before the volume is
    unmounted (the fleet's spare hosts are bound to no conversation until their task)."""
    require_bubblewrap()
    settings = ScratchSettings(quota_bytes=8 * MiB, idle_seconds=0.0)
    write = {"action": "write", "path": "kept.txt", "content": "still here"}

    async def main() -> tuple[list[str], list[str], list[ToolResult]]:
        registry = builtin_registry()
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=1, binding="at_start")
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path, scratch=settings) as executor:
            await _calls(executor, ("files", write, "w"))
            await sandbox.prewarm(executor.task(registry.entries["files"], {}, "w"))
            assert sandbox_processes(), "the pool should hold a warm host for the conversation"
            done = await executor.sweep()
            left = sandbox_processes()
            assert not os.path.ismount(tmp_path / "w")
            reread = await _calls(executor, ("files", {"action": "read", "path": "kept.txt"}, "w"))
            return done, left, reread

    done, left, [reread] = asyncio.run(main())
    assert done == ["unmounted w"] and left == []
    assert reread.content == "still here"


@pytest.mark.parametrize("quota", [True, False])
def test_two_workers_use_one_conversation_at_once(tmp_path: Path, quota: bool) -> None:
    """A run taken over by another worker goes on in the same conversation: the second worker must not
    wait for the first to let it go (it holds it as long as it keeps a warm sandbox for it)."""
    settings = ScratchSettings(quota_bytes=8 * MiB, quota=quota)
    first, second = ScratchStore(tmp_path, settings), ScratchStore(tmp_path, settings)
    entered = threading.Event()

    def enter() -> None:
        second.enter("shared")
        entered.set()

    path = first.enter("shared")
    (path / "note.txt").write_text("from the first")
    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    try:
        assert entered.wait(10), "the second worker waited for the first to let the conversation go"
        assert (second.path("shared") / "note.txt").read_text() == "from the first"
    finally:
        first.release_all()  # lets a second worker that waits go on, so that the thread ends
        thread.join(10)
        second.release_all()
