"""A tiny MCP stdio server for the workers tests, written with the ``mcp`` SDK."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("caduceus-test")


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


if __name__ == "__main__":
    server.run("stdio")
