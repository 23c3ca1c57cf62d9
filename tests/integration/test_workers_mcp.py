"""MCP stdio servers as tool sources: a real server written with the ``mcp`` SDK, run in bubblewrap."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest_workers import require_bubblewrap, require_landlock
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.mcp import McpServer, McpSource
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import Mechanism, PooledSandbox, probes
from workers.sandbox.policy import Limits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SERVER = Path(__file__).with_name("mcp_server_workers.py")
SANDBOX_ROOT = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "root", "sbin", "tmp", "usr"}


def test_mcp_tools_are_listed_and_called_through_the_executor(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> tuple[list[str], list[ToolResult]]:
        registry = builtin_registry()
        source = McpSource(
            McpServer(sys.executable, ("-I", str(SERVER)), (str(SERVER.parent),)), "bubblewrap"
        )
        try:
            await source.register(registry)
            sandbox = PooledSandbox("bubblewrap", warm=0)
            async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
                calls = [
                    ToolCall("1", "add", {"a": 2, "b": 40}),
                    ToolCall("2", "add", {"a": "two", "b": 40}),
                    ToolCall("3", "fail", {"reason": "broken on purpose"}),
                    ToolCall("4", "environment", {}),
                ]
                results = [await executor.execute(call, "m") for call in calls]
            return [spec.name for spec in registry.specs()], results
        finally:
            await source.close()

    names, (added, invalid, failed, environment) = asyncio.run(main())
    assert {"add", "fail", "environment", "python"} <= set(names)
    assert added.content == {"result": 42}
    assert invalid.error is not None and invalid.error.type == "invalid_arguments"
    assert failed.error is not None and failed.error.type == "tool_error"
    seen = str(environment.content)
    match = re.search(r"root=(\[[^\]]*\])", seen)
    assert match is not None, seen
    root = set(ast.literal_eval(match.group(1)))
    # Only the system directories and the top of the one bound path (wherever the checkout lives).
    bound_top = SERVER.parent.parts[1]
    assert root - {bound_top} <= SANDBOX_ROOT, f"the MCP server should see only its sandbox: {root}"
    assert {"usr", "proc", "tmp", bound_top} <= root
    hidden = {"home", "var", "opt", "srv", "mnt"} & set(os.listdir("/"))
    assert not (hidden - {bound_top}) & root
    assert "HOME" in seen and "CADUCEUS" not in seen


def _source(mechanism: Mechanism, limits: Limits | None = None) -> McpSource:
    server = McpServer(sys.executable, ("-I", str(SERVER)), (str(SERVER.parent),), limits=limits or Limits())
    return McpSource(server, mechanism)


async def _run_calls(
    source: McpSource, tmp_path: Path, calls: list[tuple[str, str, dict[str, Any]]]
) -> list[ToolResult]:
    registry = ToolRegistry()
    await source.register(registry)
    sandbox = PooledSandbox("bubblewrap", warm=0)
    async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
        return [
            await executor.execute(ToolCall(str(i), name, arguments), conversation)
            for i, (conversation, name, arguments) in enumerate(calls)
        ]


def test_each_conversation_has_its_own_mcp_server(tmp_path: Path) -> None:
    """A server's state (here, its memory) never reaches another conversation, so never another tenant."""
    require_bubblewrap()

    async def main() -> tuple[list[ToolResult], list[str]]:
        source = _source("bubblewrap")
        try:
            results = await _run_calls(
                source,
                tmp_path,
                [
                    ("tenant-a-thread", "remember", {"value": "a's secret"}),
                    ("tenant-b-thread", "recall", {}),
                    ("tenant-a-thread", "recall", {}),
                ],
            )
            return results, source.sessions()
        finally:
            await source.close()

    (kept, other, same), sessions = asyncio.run(main())
    assert kept.content == {"result": "kept"}
    assert other.content == {"result": "(nothing)"}, "a conversation saw what another one left in the server"
    assert same.content == {"result": "a's secret"}
    assert sorted(sessions) == ["tenant-a-thread", "tenant-b-thread"]


_FORKS = """import os, time
children, refused = [], 0
for _ in range(20):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(1)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
result = (len(children), refused)"""
_SECRET = "result = open({path!r}).read()"
_CONNECT = "import socket\nresult = socket.create_connection(('127.0.0.1', {port}), timeout=2)"
_KILL = "import os\nos.kill({pid}, 9)\nresult = 'killed'"
_MEMORY = "block = bytearray(400 * 1024 * 1024)\nresult = len(block)"


@pytest.mark.parametrize("mechanism", ["bubblewrap", "landlock"])
def test_mcp_servers_run_isolated_and_within_their_limits(tmp_path: Path, mechanism: Mechanism) -> None:
    """Outside bubblewrap too: no host files, no network, no signals out, a process count and a memory limit
    for the server as a whole (it is killed at the limit; the conversation's next call gets a new one)."""
    require_bubblewrap() if mechanism == "bubblewrap" else require_landlock()
    limits = Limits(memory_bytes=256 * 1024**2, processes=8, wall_seconds=90.0)

    async def main(found: probes.Bait) -> list[ToolResult]:
        source = _source(mechanism, limits)
        victim = found.victim.pid if found.victim is not None else 0
        try:
            return await _run_calls(
                source,
                tmp_path,
                [
                    ("c", "run", {"code": _SECRET.format(path=str(found.secret_file))}),
                    ("c", "run", {"code": _CONNECT.format(port=found.port)}),
                    ("c", "run", {"code": _KILL.format(pid=victim)}),
                    ("c", "run", {"code": _FORKS}),
                    ("c", "run", {"code": _MEMORY}),
                    ("c", "add", {"a": 1, "b": 2}),
                ],
            )
        finally:
            await source.close()

    with probes.bait() as found:
        secret, connect, kill, forks, memory, after = asyncio.run(main(found))
        assert found.victim is not None and found.victim.poll() is None, "the server killed a host process"
        assert not found.connections, "the server reached a loopback service"
    assert secret.error is not None and found.token not in str(secret.content) + secret.error.message
    assert connect.error is not None and kill.error is not None
    made, refused = ast.literal_eval(str(forks.content))
    assert refused > 0, f"the server forked {made} processes, past its limit of 8"
    assert memory.error is not None and memory.error.type == "out_of_memory", memory
    assert after.content == {"result": 3}
