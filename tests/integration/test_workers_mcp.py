"""MCP stdio servers as tool sources: a real server written with the ``mcp`` SDK, run in bubblewrap."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.integration.conftest_workers import require_bubblewrap
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.mcp import McpServer, McpSource
from workers.registry import builtin_registry
from workers.sandbox import PooledSandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
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
