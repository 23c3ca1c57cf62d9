"""``caduceus tool call NAME 'JSON-ARGS'`` and ``caduceus tool list``: tools exactly as the service runs them.

``call`` validates the arguments, runs the tool in its sandbox and prints the ``<tool_response>`` payload
JSON; it exits 0 whenever a payload was printed, tool errors included (they are in the payload). Exit 2
means the command line or the tool configuration was wrong, and nothing ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from typing import TYPE_CHECKING, Any

from toolbox.hermes import tool_response_payload
from toolbox.protocol import ToolCall
from workers.errors import WorkersError
from workers.executor import Executor
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import Isolation, create_sandbox, detect

if TYPE_CHECKING:
    from workers.mcp import McpSource


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("tool", help="list the tools or call one as the service would")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    call = actions.add_parser("call", help="call a tool and print its <tool_response> payload")
    call.add_argument("name", help="the tool's name")
    call.add_argument("arguments", nargs="?", default="{}", help="the arguments as a JSON object")
    call.add_argument("--conversation", default="cli", help="the conversation whose scratch directory to use")
    listing = actions.add_parser("list", help="print the tool specs as JSON")
    for sub in (call, listing):
        sub.add_argument("--tool", action="append", default=[], metavar="MODULE:FUNCTION", help="add a tool")
        sub.add_argument(
            "--untrusted",
            action="append",
            default=[],
            metavar="MODULE:FUNCTION",
            help="add a tool that runs untrusted code (refused where no isolation works)",
        )
        sub.add_argument(
            "--trusted",
            action="append",
            default=[],
            metavar="NAME",
            help="let the named tool run in-process (operator's flag)",
        )
        sub.add_argument(
            "--http-allow",
            action="append",
            default=[],
            metavar="HOST",
            help="enable http_get for this host (repeatable)",
        )
        sub.add_argument(
            "--mcp",
            action="append",
            default=[],
            metavar="'COMMAND ARGS'",
            help="add the tools of an MCP stdio server",
        )
        sub.add_argument(
            "--mcp-path",
            action="append",
            default=[],
            metavar="PATH",
            help="a host path the MCP servers may read (their code)",
        )
    call.set_defaults(handler=run_call)
    listing.set_defaults(handler=run_list)


def build_registry(args: argparse.Namespace) -> ToolRegistry:
    registry = builtin_registry(http_allow=args.http_allow, trusted=args.trusted)
    for target in args.tool:
        isolation: Isolation = "trusted" if target.rpartition(":")[2] in registry.trusted else "sandboxed"
        registry.add_function(target, isolation=isolation)
    for target in args.untrusted:
        registry.add_function(target, isolation="untrusted")
    return registry


def _mcp_sources(args: argparse.Namespace) -> list[McpSource]:
    # The MCP SDK takes about a second to import: only commands that name a server pay for it.
    from workers.mcp import McpServer, McpSource  # noqa: PLC0415

    servers = [shlex.split(line) for line in args.mcp]
    paths = tuple(args.mcp_path)
    return [McpSource(McpServer(argv[0], tuple(argv[1:]), paths), detect().mechanism) for argv in servers]


async def _with_tools(args: argparse.Namespace, work: Any) -> int:
    registry = build_registry(args)
    sources = _mcp_sources(args) if args.mcp else []
    try:
        for source in sources:
            await source.register(registry)
        # One call and done: no warm host is worth starting.
        sandbox = create_sandbox(preload=registry.sandbox_modules(), warm=0)
        async with Executor(registry, sandbox=sandbox) as executor:
            code: int = await work(executor)
            return code
    finally:
        for source in reversed(sources):
            await source.close()


def run_call(args: argparse.Namespace) -> int:
    try:
        arguments = json.loads(args.arguments)
    except ValueError as exc:
        print(f"the arguments are not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(arguments, dict):
        print("the arguments must be a JSON object", file=sys.stderr)
        return 2

    async def work(executor: Executor) -> int:
        result = await executor.execute(ToolCall("cli-1", args.name, arguments), args.conversation)
        print(tool_response_payload(result))
        return 0

    return _guarded(args, work)


def run_list(args: argparse.Namespace) -> int:
    async def work(executor: Executor) -> int:
        print(json.dumps([spec.to_openai() for spec in executor.specs()], indent=2, ensure_ascii=False))
        return 0

    return _guarded(args, work)


def _guarded(args: argparse.Namespace, work: Any) -> int:
    try:
        return asyncio.run(_with_tools(args, work))
    except WorkersError as exc:
        print(f"caduceus tool: {exc}", file=sys.stderr)
        return 2
