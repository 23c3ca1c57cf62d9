"""A response's input as the turns its run appends to the conversation's thread.

The input is a string (one user message) or items: messages (``user``, ``assistant``; ``system`` and
``developer`` ones join the instructions), ``function_call`` items (an earlier assistant turn's calls, for a
client that keeps the history itself) and ``function_call_output`` items. An output answers either a call
of the same input, or a call the previous response awaits: that response's calls are answered all at once,
in their order (the service's calls with the results it has, the client's with theirs), as the first turn
of the new run, so that the prompt goes on from where the previous one stopped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.chat_prompt import bad, output, text
from toolbox.hermes import render_tool_turn
from toolbox.hermes.render import render_messages
from toolbox.protocol import AssistantMessage, Message, ToolCall, ToolMessage, ToolResult, UserMessage

_MESSAGE = {"type", "role", "content", "id", "status", "phase"}
_CALL = {"type", "call_id", "name", "arguments", "id", "status"}
_OUTPUT = {"type", "call_id", "output", "id", "status"}


@dataclass(frozen=True)
class Conversation:
    """``system``: what joins the instructions; ``turns``: what the run appends; ``items``: the input items
    as given, each with an ``id`` (``input_items`` lists them)."""

    system: tuple[str, ...]
    turns: tuple[str, ...]
    items: tuple[dict[str, Any], ...]


def public_call_id(tag: str, call_id: str) -> str:
    """The id a client knows a run's call by: the run's tag in it, so that ids are unique in a chain."""
    return f"call_{tag}_{call_id.removeprefix('call_')}"


def items_of(given: str | list[dict[str, Any]], tag: str) -> tuple[dict[str, Any], ...]:
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    if not given:
        raise bad("input", "no input: a message, or the outputs of the calls the previous response awaits")
    return tuple({"id": f"in_{tag}_{n}", **item} for n, item in enumerate(given))


@dataclass
class _Reading:
    """What reading the items found so far."""

    waiting: dict[str, ToolCall]  # the previous response's calls of the client's, by public id
    answers: dict[str, Any] = field(default_factory=dict)  # their outputs, by public id
    systems: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    calls: dict[str, str] = field(default_factory=dict)  # the input's own calls: call id -> name


def conversation(
    items: Sequence[dict[str, Any]], awaited: Sequence[ToolCall | ToolResult], previous_tag: str
) -> Conversation:
    """The turns of ``items``; ``awaited``: the calls the previous response (tagged ``previous_tag``) ended
    with, which this input must answer, every one of them."""
    reading = _Reading({public_call_id(previous_tag, c.id): c for c in awaited if isinstance(c, ToolCall)})
    for n, item in enumerate(items):
        where, kind = f"input[{n}]", item.get("type", "message")
        if kind == "message":
            _message(item, where, reading)
        elif kind == "function_call":
            call = _call(item, where)
            reading.calls[call.id] = call.name
            reading.messages.append(_with_call(reading.messages, call))
        elif kind == "function_call_output":
            _output(item, where, reading)
        else:
            raise bad(f"{where}.type", f"{kind!r} items are not taken here (message, function_call, ...)")
    first = _answered(awaited, reading, previous_tag)
    turns = render_messages(reading.messages)
    if not first and not turns:
        raise bad("input", "no input: a message, or the outputs of the calls the previous response awaits")
    return Conversation(tuple(reading.systems), (*first, *turns), tuple(items))


def _fields(item: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise bad(f"{where}.{unknown[0]}", "unknown field (not part of this API)")


def _message(item: dict[str, Any], where: str, reading: _Reading) -> None:
    _fields(item, _MESSAGE, where)
    role, said = item.get("role"), text(item.get("content"), f"{where}.content")
    if role in ("system", "developer"):
        reading.systems.append(said)
    elif role == "user":
        reading.messages.append(UserMessage(said))
    elif role == "assistant":
        reading.messages.append(AssistantMessage(said))
    else:
        raise bad(f"{where}.role", f"{role!r}: a message is user, assistant, system or developer")


def _call(item: dict[str, Any], where: str) -> ToolCall:
    _fields(item, _CALL, where)
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, str):
        raise bad(where, "a function_call has a call_id, a name and arguments (JSON text)")
    try:
        decoded = json.loads(arguments or "{}")
    except ValueError:
        raise bad(f"{where}.arguments", "not JSON") from None
    if not isinstance(decoded, dict):
        raise bad(f"{where}.arguments", "must be a JSON object")
    return ToolCall(call_id, name, decoded)


def _with_call(messages: list[Message], call: ToolCall) -> AssistantMessage:
    """The assistant turn that made ``call``: the one just before it, if it is the last message."""
    last = messages[-1] if messages else None
    if isinstance(last, AssistantMessage):
        messages.pop()
        return AssistantMessage(last.content, (*last.tool_calls, call))
    return AssistantMessage("", (call,))


def _output(item: dict[str, Any], where: str, reading: _Reading) -> None:
    _fields(item, _OUTPUT, where)
    call_id = item.get("call_id")
    said = output(text(item.get("output"), f"{where}.output"))
    if call_id in reading.calls:
        result = ToolResult(str(call_id), reading.calls[str(call_id)], content=said)
        reading.messages.append(ToolMessage((result,)))
    elif call_id in reading.waiting:
        if call_id in reading.answers:
            raise bad(f"{where}.call_id", f"call {call_id!r} is answered twice")
        reading.answers[str(call_id)] = said
    else:
        raise bad(f"{where}.call_id", f"no call {call_id!r} awaits an output (see previous_response_id)")


def _answered(awaited: Sequence[ToolCall | ToolResult], reading: _Reading, tag: str) -> list[str]:
    """The tool turn that answers the previous response's calls (none when it awaits nothing)."""
    answers = reading.answers
    missing = [call_id for call_id in reading.waiting if call_id not in answers]
    if missing:
        raise bad("input", f"the previous response awaits a function_call_output for call {missing[0]!r}")
    if not awaited:
        return []
    results = [
        c
        if isinstance(c, ToolResult)
        else ToolResult(c.id, c.name, content=answers[public_call_id(tag, c.id)])
        for c in awaited
    ]
    return [render_tool_turn(results)]
