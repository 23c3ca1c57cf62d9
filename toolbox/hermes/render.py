"""Rendering Hermes prompts (turns, tools, results: the README's wire format), byte for byte.

Rendering is append-only: each turn renders on its own, from its own message, so the prompt for a longer
conversation always starts with the prompt for a shorter one, and an assistant turn that carries the
model's ``raw`` output is replayed verbatim. Untrusted text is neutralized (rule 2); JSON (tool specs,
calls, results, schemas) is escaped losslessly with ``neutralize_json``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic_core import to_jsonable_python

from toolbox.errors import RenderError
from toolbox.hermes.jsonmode import render_json_mode
from toolbox.hermes.tokens import (
    CALL_CLOSE,
    CALL_OPEN,
    IM_END,
    IM_START,
    neutralize,
    neutralize_json,
    neutralize_turns,
)
from toolbox.protocol import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolResult,
    ToolSpec,
    UserMessage,
    dumps,
)

_PREAMBLE = (
    "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
    "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
    "about what values to plug into functions. Here are the available tools: "
)
_NAME = '"name": {"title": "Name", "type": "string"}'
_ARGUMENTS = '"arguments": {"title": "Arguments", "type": "object"}'
_INSTRUCTION = (
    "For each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n<tool_call>\n"
)

#: Prompt styles by name: (the FunctionCall schema, the example call), as in the model cards.
STYLES: dict[str, tuple[str, str]] = {
    "tool_use": (
        f'{{"properties": {{{_NAME}, {_ARGUMENTS}}}, "required": ["name", "arguments"], '
        '"title": "FunctionCall", "type": "object"}',
        '{"name": <function-name>, "arguments": <args-dict>}',
    ),
    "tool_use_arguments_first": (
        f'{{"properties": {{{_ARGUMENTS}, {_NAME}}}, "required": ["arguments", "name"], '
        '"title": "FunctionCall", "type": "object"}',
        '{"arguments": <args-dict>, "name": <function-name>}',
    ),
}

_SIMPLE_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}
_MAX_TYPE_DEPTH = 6

MessageLike = Message | Mapping[str, Any]
ToolLike = ToolSpec | Mapping[str, Any]


def turn(role: str, content: str) -> str:
    """One ChatML turn. ``content`` is written as given: neutralize untrusted text first."""
    return f"{IM_START}{role}\n{content}{IM_END}\n"


def render_prompt(
    messages: Sequence[MessageLike],
    tools: Sequence[ToolLike] | None = None,
    *,
    json_schema: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
    style: str = "tool_use",
) -> str:
    """The whole prompt: the tools system turn, the JSON-mode turn, then each message's turn."""
    if style not in STYLES:
        raise RenderError(f"unknown prompt style {style!r}; choose one of {sorted(STYLES)}")
    parts: list[str] = []
    if tools:
        parts.append(turn("system", render_tools_system([as_spec(tool) for tool in tools], style)))
    if json_schema is not None:
        parts.append(turn("system", render_json_mode(json_schema)))
    parts.extend(render_messages(as_messages(messages), style=style))
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def render_messages(messages: Sequence[Message], *, style: str = "tool_use") -> list[str]:
    """Each message's turn; consecutive tool messages share one ``tool`` turn."""
    parts: list[str] = []
    pending: list[ToolResult] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            pending.extend(message.results)
            continue
        if pending:
            parts.append(render_tool_turn(pending))
            pending = []
        if isinstance(message, AssistantMessage):
            parts.append(assistant_turn(message, style=style))
        else:
            parts.append(turn(message.kind, neutralize(message.content)))
    if pending:
        parts.append(render_tool_turn(pending))
    return parts


def render_tools_system(tools: Sequence[ToolSpec], style: str = "tool_use") -> str:
    """The trained function-calling system prompt (section 2) offering ``tools``."""
    schema, example = STYLES[style]
    offered = " ".join(neutralize_json(dumps(_tool_json(spec))) for spec in tools)
    return f"{_PREAMBLE}<tools> {offered} </tools> Use the following pydantic model json schema for each tool call you will make: {schema}\n{_INSTRUCTION}{example}\n{CALL_CLOSE}"  # noqa: E501


def _tool_json(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": describe_tool(spec), "parameters": spec.parameters},
    }


def describe_tool(spec: ToolSpec) -> str:
    """The model cards' docstring convention: ``name(a: str) -> float - summary`` then Args and Returns."""
    properties = spec.parameters.get("properties") or {}
    if not isinstance(properties, Mapping):
        properties = {}
    signature = ", ".join(f"{name}: {python_type(schema)}" for name, schema in properties.items())
    returns = f" -> {python_type(spec.returns)}" if spec.returns else ""
    text = f"{spec.name}({signature}){returns} - {spec.description}"
    if properties:
        lines = [
            f"        {name} ({python_type(schema)}): {_description(schema)}"
            for name, schema in properties.items()
        ]
        text += "\n\n    Args:\n" + "\n".join(lines)
    if spec.returns and spec.returns.get("description"):
        text += f"\n\n    Returns:\n        {python_type(spec.returns)}: {spec.returns['description']}"
    return text


def _description(schema: Any) -> str:
    text = schema.get("description", "") if isinstance(schema, Mapping) else ""
    return " ".join(str(text).split())


def python_type(schema: Any, depth: int = 0) -> str:
    """A JSON Schema as a Python type name; anything unknown (or too deep) is ``Any``."""
    if not isinstance(schema, Mapping) or depth > _MAX_TYPE_DEPTH:
        return "Any"
    if isinstance(schema.get("$ref"), str):
        return schema["$ref"].rsplit("/", 1)[-1] or "Any"
    options = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(options, list) and options:
        return _union([python_type(option, depth + 1) for option in options])
    kind = schema.get("type")
    if isinstance(kind, list) and kind:
        return _union([python_type({**schema, "type": one}, depth + 1) for one in kind])
    name = _single_type(schema, kind, depth)
    return f"Optional[{name}]" if schema.get("nullable") is True and name != "None" else name


def _single_type(schema: Mapping[str, Any], kind: Any, depth: int) -> str:
    if kind == "array":
        items = schema.get("items")
        return f"list[{python_type(items, depth + 1)}]" if isinstance(items, Mapping) else "list"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"dict[str, {python_type(extra, depth + 1)}]" if isinstance(extra, Mapping) else "dict"
    if isinstance(kind, str) and kind in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[kind]
    return "Any"


def _union(names: list[str]) -> str:
    unique = list(dict.fromkeys(names))
    others = [name for name in unique if name != "None"]
    if not others:
        return "None"
    inner = others[0] if len(others) == 1 else f"Union[{', '.join(others)}]"
    return f"Optional[{inner}]" if len(others) < len(unique) else inner


def assistant_turn(message: AssistantMessage, *, style: str = "tool_use") -> str:
    """The model's raw output verbatim when we have it; otherwise content and calls, rendered."""
    if message.raw is not None:
        return turn("assistant", neutralize_turns(message.raw))
    blocks = [f"{CALL_OPEN}\n{_call_json(call, style)}\n{CALL_CLOSE}" for call in message.tool_calls]
    content = neutralize(message.content)
    return turn("assistant", "\n".join([content, *blocks] if content else blocks))


def _call_json(call: ToolCall, style: str) -> str:
    ordered = (
        {"arguments": call.arguments, "name": call.name}
        if style == "tool_use_arguments_first"
        else {"name": call.name, "arguments": call.arguments}
    )
    return neutralize_json(dumps(ordered))


def tool_response_payload(result: ToolResult) -> str:
    """The ``<tool_response>`` JSON (section 4): ``{"name", "content"}`` plus ``"error"`` when it failed."""
    payload: dict[str, Any] = {"name": result.name, "content": _jsonable(result.content)}
    if result.error is not None:
        payload["error"] = {"type": result.error.type, "message": result.error.message}
    return neutralize_json(dumps(payload))


def _jsonable(value: Any) -> Any:
    return to_jsonable_python(value, fallback=str)


def render_tool_turn(results: Iterable[ToolResult]) -> str:
    """One ``tool`` turn holding one ``<tool_response>`` per result, in call order."""
    body = "".join(
        f"<tool_response>\n{tool_response_payload(result)}\n</tool_response>\n" for result in results
    )
    return turn("tool", body)


# -- accepting OpenAI-style input ----------------------------------------------------------------


def as_spec(tool: ToolLike) -> ToolSpec:
    """A ``ToolSpec`` from a spec, an OpenAI tool dict, or a bare ``{"name", "parameters"}`` dict."""
    if isinstance(tool, ToolSpec):
        return tool
    if not isinstance(tool, Mapping):
        raise RenderError(f"a tool must be a ToolSpec or a dict, not {type(tool).__name__}")
    function = tool.get("function", tool)
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise RenderError("an OpenAI tool needs {'type': 'function', 'function': {'name': ...}}")
    parameters = function.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise RenderError(f"tool {function['name']!r}: 'parameters' must be a JSON Schema object")
    returns = function.get("return")
    return ToolSpec(
        name=function["name"],
        description=str(function.get("description") or ""),
        parameters=dict(parameters),
        returns=dict(returns) if isinstance(returns, Mapping) else None,
    )


def as_messages(messages: Sequence[MessageLike]) -> list[Message]:
    """Toolbox messages from toolbox messages or OpenAI-style dicts (tool names found by call id)."""
    result: list[Message] = []
    names: dict[str, str] = {}
    for message in messages:
        converted = message if not isinstance(message, Mapping) else _from_dict(message, names)
        if isinstance(converted, AssistantMessage):
            names.update({call.id: call.name for call in converted.tool_calls})
        result.append(converted)
    return result


def _from_dict(message: Mapping[str, Any], names: Mapping[str, str]) -> Message:
    role = message.get("role")
    if role == "system":
        return SystemMessage(_text(message.get("content")))
    if role == "user":
        return UserMessage(_text(message.get("content")))
    if role == "assistant":
        calls = tuple(_call_from_dict(n, call) for n, call in enumerate(message.get("tool_calls") or []))
        return AssistantMessage(content=_text(message.get("content")), tool_calls=calls)
    if role == "tool":
        return ToolMessage((_result_from_dict(message, names),))
    raise RenderError(f"unknown message role {role!r}; use system, user, assistant or tool")


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    raise RenderError(f"message content must be text, not {type(content).__name__}")


def _call_from_dict(index: int, call: Any) -> ToolCall:
    function = call.get("function", call) if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise RenderError(f"tool_calls[{index}] needs a function name")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            raise RenderError(f"tool_calls[{index}].arguments is not JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise RenderError(f"tool_calls[{index}].arguments must be a JSON object")
    return ToolCall(id=str(call.get("id") or f"call_{index}"), name=function["name"], arguments=arguments)


def _result_from_dict(message: Mapping[str, Any], names: Mapping[str, str]) -> ToolResult:
    call_id = str(message.get("tool_call_id") or "")
    name = message.get("name") or names.get(call_id)
    if not isinstance(name, str):
        raise RenderError("a tool message needs a 'name' or the 'tool_call_id' of an earlier call")
    content = message.get("content")
    if isinstance(content, str):
        with contextlib.suppress(ValueError):
            content = json.loads(content)
    return ToolResult(call_id=call_id, name=name, content=content)
