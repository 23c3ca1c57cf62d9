"""A tiny MCP stdio server for the workers tests, written with the ``mcp`` SDK."""

from __future__ import annotations

import os
from typing import Any

from mcp.server.mcpserver import MCPServer

server = MCPServer("caduceus-test")
_MEMORY: dict[str, str] = {}


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def environment() -> str:
    """Report what the server can see of its environment and host."""
    return f"vars={sorted(os.environ)} root={sorted(os.listdir('/'))}"


@server.tool()
def fail(reason: str) -> str:
    """Always fail with the given reason."""
    raise ValueError(reason)


@server.tool()
def remember(value: str) -> str:
    """Keep a value in the server's memory."""
    _MEMORY["value"] = value
    return "kept"


@server.tool()
def recall() -> str:
    """The value kept in the server's memory, if any."""
    return _MEMORY.get("value", "(nothing)")


@server.tool()
def run(code: str) -> Any:
    """Run Python statements in the server; the value of ``result`` comes back (a probe for the tests)."""
    scope: dict[str, Any] = {}
    exec(code, scope)  # a test server: the tests probe its sandbox with it
    return repr(scope.get("result"))


if __name__ == "__main__":
    server.run("stdio")
