"""A response's tools, tool choice and output format, as a run's: every refusal a 400 naming its field.

Two kinds of tool: ``{"type": "function", "name", "parameters", ...}`` is a function the client runs (the
response ends with its ``function_call`` items; the client answers with ``function_call_output`` items and
``previous_response_id``), and ``{"type": "mcp", "server_label": "caduceus", "allowed_tools": [...]}``
names tools the service runs itself (``GET /v1/tools``: the built-in tools and those of the MCP servers
the tool workers are configured with; all of them when ``allowed_tools`` is left out). The service
connects to no other MCP server: ``server_url`` is refused.

``tool_choice`` holds the response's first model turn (``required``: a call; a function's or tool's name:
that call; ``none``: text), as a run's ``tool_choice`` does; the turns after it are ``auto``. A choice
other than ``auto`` is decoded under the grammar (an engine that cannot constrain ignores it), as are all
turns of a model constrained by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.api.chat_prompt import bad
from orchestrator.api.response_models import FunctionChoice, McpChoice, ResponseRequest
from orchestrator.api.schemas import check_schema
from toolbox.protocol import ToolSpec

SERVER_LABEL = "caduceus"
_EMPTY = {"type": "object", "properties": {}}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Toolset:
    """The run's tools (the service's first, then the client's functions), which of them the client runs,
    and its per-turn tool choice."""

    tools: tuple[ToolSpec, ...]
    client: tuple[str, ...]
    choice: tuple[str, ...]


def toolset(request: ResponseRequest, served: Mapping[str, ToolSpec]) -> Toolset:
    server: dict[str, ToolSpec] = {}
    client: dict[str, ToolSpec] = {}
    for n, tool in enumerate(request.tools or []):
        where = f"tools[{n}]"
        kind = tool.get("type")
        if kind == "function":
            spec = _function(tool, where)
            if spec.name in client or spec.name in server:
                raise bad(f"{where}.name", f"{spec.name!r} is offered twice")
            client[spec.name] = spec
        elif kind == "mcp":
            server |= _served(tool, where, served)
        else:
            raise bad(
                f"{where}.type", f"{kind!r} tools are not run here (function, or mcp for the service's)"
            )
    clash = sorted(set(server) & set(client))
    if clash:
        raise bad("tools", f"{clash[0]!r} is both a function of yours and a tool of the service's")
    tools = (*server.values(), *client.values())
    return Toolset(tools, tuple(client), _choice(request, tools))


def _function(tool: dict[str, Any], where: str) -> ToolSpec:
    unknown = sorted(set(tool) - {"type", "name", "description", "parameters", "strict"})
    if unknown:
        raise bad(f"{where}.{unknown[0]}", "unknown field (not part of this API)")
    name, description = tool.get("name"), tool.get("description") or ""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad(f"{where}.name", "a function's name is 1-64 letters, digits, _ or -")
    if not isinstance(description, str):
        raise bad(f"{where}.description", "must be text")
    parameters = tool.get("parameters") or _EMPTY
    if not isinstance(parameters, dict):
        raise bad(f"{where}.parameters", "must be a JSON Schema object")
    check_schema(parameters, f"{where}.parameters", status=400)
    return ToolSpec(name, description, parameters)


def _served(tool: dict[str, Any], where: str, served: Mapping[str, ToolSpec]) -> dict[str, ToolSpec]:
    if tool.get("server_url") or tool.get("connector_id"):
        raise bad(f"{where}.server_url", "no remote MCP servers: name the service's tools (GET /v1/tools)")
    if tool.get("server_label") != SERVER_LABEL:
        raise bad(f"{where}.server_label", f"the service's tools are server_label {SERVER_LABEL!r}")
    if tool.get("require_approval") not in (None, "never"):
        raise bad(f"{where}.require_approval", "the service's tools run without approval: 'never'")
    unknown = sorted(
        set(tool) - {"type", "server_label", "allowed_tools", "require_approval", "server_description"}
    )
    if unknown:
        raise bad(f"{where}.{unknown[0]}", "unknown field (not part of this API)")
    allowed = tool.get("allowed_tools")
    names = list(served) if allowed is None else allowed
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise bad(f"{where}.allowed_tools", "a list of the service's tool names")
    missing = [name for name in names if name not in served]
    if missing:
        raise bad(f"{where}.allowed_tools", f"no tool {missing[0]!r} here (see GET /v1/tools)")
    return {name: served[name] for name in names}


def _choice(request: ResponseRequest, tools: tuple[ToolSpec, ...]) -> tuple[str, ...]:
    choice = request.tool_choice
    if choice is None or choice == "auto":
        return ()
    if isinstance(choice, FunctionChoice | McpChoice):
        name = choice.name if choice.name is not None else "required"
        if isinstance(choice, McpChoice) and choice.server_label != SERVER_LABEL:
            raise bad("tool_choice.server_label", f"the service's tools are server_label {SERVER_LABEL!r}")
    else:
        name = choice
    if name != "none" and not tools:
        raise bad("tool_choice", f"{name!r} needs tools")
    if name not in ("none", "required") and all(tool.name != name for tool in tools):
        raise bad("tool_choice.name", f"no tool named {name!r} in tools")
    return (name,)


def output_schema(request: ResponseRequest) -> dict[str, Any] | None:
    """The JSON Schema the answer must match (``text.format``), if any."""
    found = request.text.format if request.text is not None else None
    if found is None or found.type == "text":
        return None
    schema = found.schema_ if found.type == "json_schema" and found.schema_ else {"type": "object"}
    check_schema(schema, "text.format.schema", status=400)
    return schema


def refuse_unsupported(request: ResponseRequest) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("include", bool(request.include), "nothing more can be included"),
        ("reasoning", request.reasoning is not None, "not supported by these models"),
        ("service_tier", request.service_tier not in (None, "auto", "default"), "only auto"),
        ("top_logprobs", bool(request.top_logprobs), "log probabilities are not returned"),
        ("parallel_tool_calls", request.parallel_tool_calls is False, "a turn may always make several calls"),
        ("store", request.store is False and bool(request.background), "a background response is stored"),
        ("store", request.store is False and bool(request.stream), "a streamed response is stored"),
        ("stream_options", request.stream_options is not None and not request.stream, "needs stream"),
    ]
    for param, refused, why in checks:
        if refused:
            raise bad(param, why)
