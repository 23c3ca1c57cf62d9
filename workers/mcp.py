"""MCP servers (stdio) as tool sources, through the ``mcp`` SDK.

A server's tools are listed with their JSON Schemas, registered like any other tool, validated by the
same executor, and called over a stdio session.

**One session per conversation.** A server keeps state between calls (files, memory, logins), so each
conversation gets a server process of its own, started at its first call: what one conversation (and so
one tenant, since conversation keys are per tenant) leaves in a server, no other can see. Sessions idle
for ``idle_seconds`` are closed, and at most ``max_sessions`` live at once (the least recently used idle
one is closed first). A call that times out, or whose server dies, ends its session; the next call of
that conversation starts a fresh one.

**Isolation and limits.** Every server process runs as a tool call does (``sandbox.jail``): bubblewrap,
else Landlock + seccomp, else a plain process; in a cgroup with the server's memory, process and CPU
limits; with per-process limits; with no network unless the server has an egress allow-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections import OrderedDict
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
from workers.sandbox import jail
from workers.sandbox.cgroup import CallGroup, CallGroups, dispose
from workers.sandbox.policy import Limits, Mechanism, Outcome

_CONNECTION_CLOSED = -32000


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
    """One MCP server's tools: ``await start()`` (or ``register``), calls, ``await close()``."""

    def __init__(
        self,
        server: McpServer,
        mechanism: Mechanism,
        *,
        max_sessions: int = 16,
        idle_seconds: float = 600.0,
    ) -> None:
        self.server = server
        self.mechanism = mechanism
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.groups = CallGroups()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._starting: dict[str, asyncio.Future[_Session]] = {}

    async def start(self) -> list[ToolEntry]:
        """List the server's tools, from a session of its own that is closed afterwards."""
        session = await self._open("listing")
        try:
            listed = await session.client.list_tools()
        except MCPError as exc:
            raise ToolSourceError(
                f"MCP server {self.server.command!r} did not list its tools: {exc}"
            ) from exc
        finally:
            await session.close()
        return [self._entry(tool) for tool in listed.tools]

    async def register(self, registry: ToolRegistry) -> list[ToolEntry]:
        return [registry.add(entry) for entry in await self.start()]

    def sessions(self) -> list[str]:
        """The conversations that have a live session."""
        return list(self._sessions)

    def _entry(self, tool: mcp_types.Tool) -> ToolEntry:
        spec = ToolSpec(
            self.server.prefix + tool.name, tool.description or tool.name, dict(tool.input_schema)
        )
        try:
            check_schema(spec)
        except SchemaError as exc:
            raise ToolSourceError(f"MCP tool {tool.name!r} has an unusable schema: {exc}") from exc

        async def call(arguments: dict[str, Any], limits: Limits, conversation: str) -> Outcome:
            return await self.call(tool.name, arguments, limits, conversation)

        return ToolEntry(spec, "sandboxed", self.server.limits, self.server.egress, remote=call)

    async def call(self, name: str, arguments: dict[str, Any], limits: Limits, conversation: str) -> Outcome:
        session = await self._session(conversation)
        session.busy += 1
        try:
            result = await session.client.call_tool(name, arguments, read_timeout_seconds=limits.wall_seconds)
        except MCPError as exc:
            if exc.error.code != _CONNECTION_CLOSED:
                return Outcome(
                    error_type="tool_error", error_message=f"the MCP server answered: {exc.error.message}"
                )
            await self._end(conversation, session)
            return session.death(limits)
        except TimeoutError:
            await self._end(conversation, session)  # it may still be running the call: start afresh
            return Outcome(
                error_type="timeout",
                error_message=f"the MCP server gave no answer in {limits.wall_seconds} s",
            )
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()
        content = _content(result)
        if result.is_error:
            return Outcome(error_type="tool_error", error_message=str(content))
        return Outcome(content)

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()

    async def _session(self, conversation: str) -> _Session:
        session = self._sessions.get(conversation)
        if session is not None and session.alive:
            self._sessions.move_to_end(conversation)
            return session
        if session is not None:
            await self._end(conversation, session)
        starting = self._starting.get(conversation)
        if starting is None:  # one start per conversation, however many calls wait for it
            starting = asyncio.ensure_future(self._start_session(conversation))
            self._starting[conversation] = starting
            starting.add_done_callback(lambda _: self._starting.pop(conversation, None))
        return await asyncio.shield(starting)

    async def _start_session(self, conversation: str) -> _Session:
        await self._trim()
        session = await self._open(conversation)
        self._sessions[conversation] = session
        return session

    async def _trim(self) -> None:
        """Close idle sessions, then the least recently used ones past ``max_sessions``."""
        now = time.monotonic()
        for conversation, session in list(self._sessions.items()):
            if not session.busy and now - session.last_used >= self.idle_seconds:
                await self._end(conversation, session)
        for conversation, session in list(self._sessions.items()):
            if len(self._sessions) < self.max_sessions:
                break
            if not session.busy:
                await self._end(conversation, session)

    async def _end(self, conversation: str, session: _Session) -> None:
        if self._sessions.get(conversation) is session:
            del self._sessions[conversation]
        await session.close()

    async def _open(self, conversation: str) -> _Session:
        try:
            group = self.groups.create()
            if group is not None:
                group.apply(self.server.limits)
                group.share_cpu(self.server.limits.cpus)
        except OSError as exc:
            raise ToolSourceError(f"cannot create the MCP server's cgroup: {exc}") from exc
        home = Path(tempfile.mkdtemp(prefix="caduceus-mcp-"))
        argv = jail.command(
            [self.server.command, *self.server.args],
            mechanism=self.mechanism,
            read_only=self.server.read_only,
            egress=bool(self.server.egress),
            limits=self.server.limits,
            groups=group.dirs if group is not None else {},
            home=home,
        )
        session = _Session(StdioServerParameters(command=argv[0], args=argv[1:]), group, home)
        try:
            await session.open()
        except (OSError, MCPError) as exc:
            raise ToolSourceError(f"MCP server {self.server.command!r} did not start: {exc}") from exc
        return session


class _Session:
    """One server process and its session, entered and left in a task of its own (the SDK's task groups
    must be left by the task that entered them, and a session is closed by whichever call ends it)."""

    def __init__(self, parameters: StdioServerParameters, group: CallGroup | None, home: Path) -> None:
        self.parameters = parameters
        self.group = group
        self.home = home
        self.busy = 0
        self.last_used = time.monotonic()
        self._client: ClientSession | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._oom = False

    @property
    def client(self) -> ClientSession:
        assert self._client is not None
        return self._client

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def open(self) -> None:
        if self.group is not None:
            self.group.watch_oom(asyncio.get_running_loop().add_reader, self._on_oom)
        self._task = asyncio.create_task(self._run())
        try:
            await self._ready
        except BaseException:
            await self.close()
            raise

    def _on_oom(self) -> None:
        self._oom = True
        assert self.group is not None
        self.group.unwatch(asyncio.get_running_loop().remove_reader)
        self.group.kill_all()

    def death(self, limits: Limits) -> Outcome:
        """What to tell the model when the server died during its call."""
        if self._oom or (self.group is not None and self.group.oom_kills()):
            mib = limits.memory_bytes // (1024 * 1024)
            message = f"the MCP server passed its memory limit of {mib} MiB and was killed; use less memory"
            return Outcome(error_type="out_of_memory", error_message=message)
        return Outcome(error_type="crashed", error_message="the MCP server exited during the call")

    async def _run(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(stdio_client(self.parameters))
                client = await stack.enter_async_context(ClientSession(read, write))
                await client.initialize()
                self._client = client
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc if isinstance(exc, Exception) else ToolSourceError(repr(exc)))
            if not isinstance(exc, Exception):
                raise

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await dispose(self.group)
        shutil.rmtree(self.home, ignore_errors=True)


def _content(result: mcp_types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
    if len(texts) == 1:
        return texts[0]
    return texts or [block.model_dump(mode="json") for block in result.content]
