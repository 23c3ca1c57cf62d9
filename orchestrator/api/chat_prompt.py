"""A chat-completions request as one Hermes completion: the prompt rendered by our toolbox (the trained
tools prompt, JSON mode, each message's turn, untrusted text neutralized), the decoding constraint, the
sampling and the stop strings. Everything a request cannot mean here is refused with a 400 that names
its field (``param``), before the model is asked anything.

The constraint follows OpenAI's promises: ``tool_choice`` ``required`` or a named function, and a
``response_format`` of ``json_object`` or ``json_schema``, are always decoded under a grammar (an engine
that cannot constrain, as the scripted one, ignores it); ``auto`` is when the model is constrained by
default or a function is ``strict``; ``none`` forbids calls when the model is constrained by default.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.api.chat_models import AssistantIn, ChatRequest, Content, NamedChoice, ToolIn, UserIn
from orchestrator.api.errors import ApiError
from orchestrator.api.schemas import check_schema
from orchestrator.ports import CompletionRequest, Sampling
from toolbox.hermes import STOP, render_prompt
from toolbox.hermes.constraint import json_answer, text_only, tool_calls
from toolbox.protocol import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolResult,
    ToolSpec,
    UserMessage,
)

_EMPTY = {"type": "object", "properties": {}}


def bad(param: str, message: str) -> ApiError:
    """A 400 about one field of the request."""
    return ApiError(400, "invalid_request", f"{param}: {message}", param=param)


@dataclass(frozen=True)
class Prepared:
    """What to ask the engine and how to read its answer: ``choice`` is the request's tool choice (a
    function's name when one is named); ``single``: at most one call is returned."""

    completion: CompletionRequest
    tools: tuple[ToolSpec, ...]
    choice: str
    single: bool
    json_mode: bool
    include_usage: bool
    call_prefix: str


def prepare(request: ChatRequest, *, constrained: bool, max_tokens: int) -> Prepared:
    """The request as one completion; ``constrained``: the model decodes under a grammar by default;
    ``max_tokens``: the default bound of the answer."""
    _refuse_unsupported(request)
    tools = _tools(request)
    choice = _choice(request, tools)
    schema = _schema(request)
    messages = _messages(request)
    prompt = render_prompt(messages, list(tools), json_schema=schema)
    single = request.parallel_tool_calls is False
    constraint = _constraint(tools, choice, schema, constrained or _strict(request), single)
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    completion = CompletionRequest(
        prompt,
        request.max_completion_tokens or request.max_tokens or max_tokens,
        stop=(*STOP, *(stop for stop in stops if stop)),
        sampling=_sampling(request),
        session_id=_session(prompt, len(messages)),
        constraint=constraint,
        model=request.model,
    )
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    prefix = f"call_{uuid.uuid4().hex[:16]}_"
    return Prepared(completion, tools, choice, single, schema is not None, include_usage, prefix)


def _refuse_unsupported(request: ChatRequest) -> None:
    neutral: list[tuple[str, bool, str]] = [
        ("n", request.n not in (None, 1), "only 1 choice is generated (n=1)"),
        ("logprobs", bool(request.logprobs), "log probabilities are not returned"),
        ("top_logprobs", bool(request.top_logprobs), "log probabilities are not returned"),
        ("logit_bias", bool(request.logit_bias), "not supported"),
        ("frequency_penalty", bool(request.frequency_penalty), "not supported (only 0)"),
        ("presence_penalty", bool(request.presence_penalty), "not supported (only 0)"),
        ("store", bool(request.store), "chat completions are not stored here; use /v1/responses"),
        ("service_tier", request.service_tier not in (None, "auto", "default"), "only auto"),
        ("reasoning_effort", request.reasoning_effort is not None, "not supported by these models"),
        ("stream_options", request.stream_options is not None and not request.stream, "needs stream"),
    ]
    for param, refused, why in neutral:
        if refused:
            raise bad(param, why)


def _tools(request: ChatRequest) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for n, tool in enumerate(request.tools or []):
        function = tool.function
        parameters = function.parameters if function.parameters is not None else _EMPTY
        check_schema(parameters, f"tools[{n}].function.parameters", status=400)
        if any(spec.name == function.name for spec in specs):
            raise bad(f"tools[{n}].function.name", f"{function.name!r} is defined twice")
        specs.append(ToolSpec(function.name, function.description, parameters))
    return tuple(specs)


def _choice(request: ChatRequest, tools: Sequence[ToolSpec]) -> str:
    choice = request.tool_choice
    if choice is None:
        return "auto" if tools else "none"
    name = choice.function.name if isinstance(choice, NamedChoice) else choice
    if name not in ("none", "auto") and not tools:
        raise bad("tool_choice", f"{name!r} needs tools")
    if isinstance(choice, NamedChoice) and all(tool.name != name for tool in tools):
        raise bad("tool_choice.function.name", f"no tool named {name!r} in tools")
    return name


def _schema(request: ChatRequest) -> dict[str, Any] | None:
    found = request.response_format
    if found is None or found.type == "text":
        return None
    if found.type == "json_object":
        return {"type": "object"}
    schema = found.json_schema.schema_ or {"type": "object"}
    check_schema(schema, "response_format.json_schema.schema", status=400)
    return schema


def _strict(request: ChatRequest) -> bool:
    return any(tool.function.strict for tool in request.tools or [])


def _constraint(
    tools: Sequence[ToolSpec], choice: str, schema: dict[str, Any] | None, constrained: bool, single: bool
) -> dict[str, Any] | None:
    if tools and choice == "auto":
        return tool_calls(tools, single=single) if constrained else None
    if tools and choice != "none":
        offered = [tool for tool in tools if choice in ("required", tool.name)]
        return tool_calls(offered, require=True, single=single or choice != "required")
    if schema is not None:
        return json_answer(schema)  # OpenAI's JSON modes promise JSON: always under the grammar
    return text_only() if tools and constrained else None


def _sampling(request: ChatRequest) -> Sampling:
    default = Sampling()
    return Sampling(
        temperature=default.temperature if request.temperature is None else request.temperature,
        top_p=default.top_p if request.top_p is None else request.top_p,
        seed=request.seed,
    )


def _session(prompt: str, turns: int) -> str:
    # The conversation's start (its system turns and first message) names it, so that every request of
    # one conversation reaches the replica whose prefix cache holds it.
    start = prompt.split("<|im_end|>\n", 3 if turns > 1 else 2)
    return "chat-" + hashlib.sha256("".join(start[:-1]).encode()).hexdigest()[:32]


def text(content: Content | None, param: str) -> str:
    """A message's text: a string, or its text parts joined by newlines (a text model reads nothing else)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts: list[str] = []
    for n, part in enumerate(content):
        kind = part.get("type")
        if kind not in ("text", "input_text", "output_text") or not isinstance(part.get("text"), str):
            raise bad(f"{param}[{n}]", f"a part of type {kind!r} is not supported (text only)")
        texts.append(part["text"])
    return "\n".join(texts)


def _messages(request: ChatRequest) -> list[Message]:
    messages: list[Message] = []
    names: dict[str, str] = {}  # call id -> tool name, from the assistant messages so far
    for n, message in enumerate(request.messages):
        where = f"messages[{n}]"
        if isinstance(message, AssistantIn):
            calls = tuple(
                _call(call.id, call.function.name, call.function.arguments, f"{where}.tool_calls")
                for call in message.tool_calls or []
            )
            names |= {call.id: call.name for call in calls}
            messages.append(AssistantMessage(text(message.content, f"{where}.content"), calls))
        elif isinstance(message, ToolIn):
            messages.append(ToolMessage((_result(message, names, where),)))
        elif isinstance(message, UserIn):
            messages.append(UserMessage(text(message.content, f"{where}.content")))
        else:
            messages.append(SystemMessage(text(message.content, f"{where}.content")))
    return messages


def _call(call_id: str, name: str, arguments: str, param: str) -> ToolCall:
    try:
        decoded = json.loads(arguments or "{}")
    except ValueError:
        raise bad(f"{param}.function.arguments", "not JSON") from None
    if not isinstance(decoded, dict):
        raise bad(f"{param}.function.arguments", "must be a JSON object")
    return ToolCall(call_id, name, decoded)


def _result(message: ToolIn, names: dict[str, str], where: str) -> ToolResult:
    name = names.get(message.tool_call_id)
    if name is None:
        raise bad(f"{where}.tool_call_id", f"no earlier assistant tool call has id {message.tool_call_id!r}")
    return ToolResult(message.tool_call_id, name, content=output(text(message.content, f"{where}.content")))


def output(value: str) -> Any:
    """A tool's output as the model reads it: the JSON value when it is JSON, else the text."""
    try:
        return json.loads(value)
    except ValueError:
        return value
