"""MCP servers (stdio) as tool sources, through the ``mcp`` SDK.

A server's tools are listed with their JSON Schemas, registered like any other tool, validated by the
same executor, and called over the server's stdio session. Under bubblewrap the server process itself
runs in a sandbox (no host environment, read-only system and Python paths plus the paths the operator
names, a private ``/tmp``, no network unless it has an egress allow-list, the same seccomp filter).
Elsewhere it runs as a plain process with the SDK's minimal environment.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from toolbox.errors import SchemaError
from toolbox.protocol import ToolSpec
from toolbox.schema import check_schema
from workers.errors import ToolSourceError
from workers.registry import ToolEntry, ToolRegistry
from workers.sandbox import launch, seccomp
from workers.sandbox.policy import Limits, Mechanism, Outcome

_SECCOMP_FD = "9"


@dataclass(frozen=True)
class McpServer:
    """How to start one stdio MCP server, and the policy its tools run under."""

    command: str
    args: tuple[str, ...] = ()
    read_only: tuple[str, ...] = ()  # extra host paths the server needs (its code, its data)
    egress: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    prefix: str = ""  # prepended to the server's tool names, to avoid clashes between servers


class McpSource:
    """One running MCP server: ``await start()``, register its tools, ``await close()`` (same task)."""

    def __init__(self, server: McpServer, mechanism: Mechanism) -> None:
        self.server = server
        self.mechanism = mechanism
        self._stack = contextlib.AsyncExitStack()
        self._session: ClientSession | None = None
        self._seccomp_file: str | None = None

    async def start(self) -> list[ToolEntry]:
        try:
            read, write = await self._stack.enter_async_context(stdio_client(self._parameters()))
            session = await self._stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            listed = await session.list_tools()
        except (OSError, MCPError) as exc:
            await self.close()
            raise ToolSourceError(f"MCP server {self.server.command!r} did not start: {exc}") from exc
        self._session = session
        return [self._entry(tool) for tool in listed.tools]

    async def register(self, registry: ToolRegistry) -> list[ToolEntry]:
        return [registry.add(entry) for entry in await self.start()]

    def _entry(self, tool: mcp_types.Tool) -> ToolEntry:
        spec = ToolSpec(
            self.server.prefix + tool.name, tool.description or tool.name, dict(tool.input_schema)
        )
        try:
            check_schema(spec)
        except SchemaError as exc:
            raise ToolSourceError(f"MCP tool {tool.name!r} has an unusable schema: {exc}") from exc

        async def call(arguments: dict[str, Any], limits: Limits, conversation: str) -> Outcome:
            return await self.call(tool.name, arguments, limits)

        return ToolEntry(spec, "sandboxed", self.server.limits, self.server.egress, remote=call)

    async def call(self, name: str, arguments: dict[str, Any], limits: Limits) -> Outcome:
        if self._session is None:
            raise ToolSourceError("the MCP server is not started")
        try:
            result = await self._session.call_tool(name, arguments, read_timeout_seconds=limits.wall_seconds)
        except MCPError as exc:
            return Outcome(
                error_type="tool_error", error_message=f"the MCP server answered: {exc.error.message}"
            )
        except TimeoutError:
            return Outcome(
                error_type="timeout",
                error_message=f"the MCP server gave no answer in {limits.wall_seconds} s",
            )
        content = _content(result)
        if result.is_error:
            return Outcome(error_type="tool_error", error_message=str(content))
        return Outcome(content)

    async def close(self) -> None:
        self._session = None
        await self._stack.aclose()
        if self._seccomp_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._seccomp_file)

    def _parameters(self) -> StdioServerParameters:
        if self.mechanism != "bubblewrap":
            return StdioServerParameters(command=self.server.command, args=list(self.server.args))
        with tempfile.NamedTemporaryFile(prefix="caduceus-seccomp-", delete=False) as handle:
            handle.write(seccomp.program())
        self._seccomp_file = handle.name
        argv = [*self._bwrap_args(), "--", self.server.command, *self.server.args]
        # The shell opens the filter on fd 9 for bwrap, since the SDK cannot pass extra descriptors.
        shell = f'exec "$@" {_SECCOMP_FD}<"$0"'
        return StdioServerParameters(command="/bin/sh", args=["-c", shell, handle.name, *argv])

    def _bwrap_args(self) -> list[str]:
        args = [launch.bwrap_binary(), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += [
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--cap-drop",
            "ALL",
        ]
        if not self.server.egress:
            args.append("--unshare-net")
        # The private /tmp first: binds of paths under /tmp (a checkout, a virtual environment) go on top.
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for name in launch.SYSTEM_DIRS:
            if Path(name).is_symlink():
                args += ["--symlink", os.readlink(name), name]
            elif Path(name).exists():
                args += ["--ro-bind", name, name]
        paths = [
            sys.base_prefix,
            sys.prefix,
            *map(str, launch.site_dirs()),
            *launch.ETC_FILES,
            *self.server.read_only,
        ]
        for path in paths:
            args += ["--ro-bind", path, path]
        args += ["--chdir", "/tmp"]
        args += ["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
        return [*args, "--seccomp", _SECCOMP_FD]


def _content(result: mcp_types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
    if len(texts) == 1:
        return texts[0]
    return texts or [block.model_dump(mode="json") for block in result.content]
