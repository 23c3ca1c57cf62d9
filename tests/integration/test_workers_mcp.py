"""MCP stdio servers as tool sources: a real server written with the ``mcp`` SDK, run in bubblewrap."""

from __future__ import annotations

import asyncio
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
    assert "root=['bin', 'dev', 'etc', 'lib'" in seen, "the MCP server should see only its sandbox"
    assert "HOME" in seen and "CADUCEUS" not in seen
