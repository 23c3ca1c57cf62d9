"""A response's output items, from its run: built the same way from the run's live events (a stream) and from
the turns it committed (a retrieved response), so the two agree item for item.

Each model turn (a step) gives, in the order they began: a ``message`` with the turn's prose (one per turn;
the whole prose's outer whitespace left out, as the parser's content is), and an ``mcp_call`` per call the
service ran (a call it refused before running, for bad arguments or a limit, went back to the model and
is no item). The run's end adds a ``function_call`` per call the client runs that the response awaits.
Ids derive from the run, the step and the call's index, so they are the same however often they are built.

A streamed ``mcp_call``'s output is the start of the result its event carries (200 characters); the
retrieved response, and the ``response.completed`` event, hold all of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api.chat import Trim
from orchestrator.api.response_input import public_call_id
from orchestrator.api.response_tools import SERVER_LABEL
from toolbox.hermes import ContentDelta, StreamParser, ToolCallFailed, ToolCallReady
from toolbox.protocol import ToolCall, ToolResult, dumps

Event = dict[str, Any]  # a Responses stream event, without its sequence number
#: Results of calls refused before they ran: the model read why; no item shows them.
REFUSED = frozenset({"invalid_arguments", "denied", "unknown_tool", "malformed_call"})


@dataclass
class _Step:
    parser: StreamParser
    trim: Trim = field(default_factory=Trim)
    message: int | None = None  # the output index of the turn's message
    calls: dict[int, int] = field(default_factory=dict)  # call index -> output index
    text: str = ""


@dataclass
class Output:
    """The output items so far (``items``); each method returns the stream events of what it added."""

    tag: str
    client_tools: frozenset[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    steps: dict[int, _Step] = field(default_factory=dict)

    def _step(self, step: int) -> _Step:
        return self.steps.setdefault(step, _Step(StreamParser(id_prefix=f"call_{step}_")))

    def text(self, step: int, text: str) -> list[Event]:
        """The model's text of turn ``step`` as it comes: its prose goes to the turn's message."""
        state = self._step(step)
        return [event for found in state.parser.feed(text) for event in self._prose(step, state, found)]

    def _prose(self, step: int, state: _Step, found: Any) -> list[Event]:
        if not isinstance(found, ContentDelta):
            return []
        delta = state.trim.feed(found.text)
        if not delta:
            return []
        events = []
        if state.message is None:
            state.message = len(self.items)
            self.items.append(_message(f"msg_{self.tag}_{step}", "", "in_progress"))
            item = self.items[state.message]
            events += [_added(state.message, item | {"content": []}), _part(item, state.message, "added")]
        state.text += delta
        item = self.items[state.message]
        item["content"][0]["text"] = state.text
        said = {"content_index": 0, "delta": delta, "logprobs": []}
        events.append(_ref("response.output_text.delta", item, state.message) | said)
        return events

    def call(self, step: int, index: int, name: str, arguments: dict[str, Any]) -> list[Event]:
        """A call the service runs, as it starts."""
        state = self._step(step)
        state.calls[index] = at = len(self.items)
        item = {
            "id": f"mcp_{self.tag}_{step}_{index}",
            "type": "mcp_call",
            "server_label": SERVER_LABEL,
            "name": name,
            "arguments": dumps(arguments),
            "status": "in_progress",
            "output": None,
            "error": None,
        }
        self.items.append(item)
        arguments_done = _ref("response.mcp_call_arguments.done", item, at) | {"arguments": item["arguments"]}
        return [_added(at, item), arguments_done, _ref("response.mcp_call.in_progress", item, at)]

    def result(self, step: int, index: int, output: str | None, error: dict[str, Any] | None) -> list[Event]:
        """The result of a call the service ran (``output``: its content as JSON text)."""
        at = self._step(step).calls.get(index)
        if at is None:
            return []
        item = self.items[at]
        failed = error is not None
        item |= {"status": "failed" if failed else "completed", "output": output}
        item["error"] = {"type": "mcp_tool_execution_error", "content": error} if failed else None
        kind = "response.mcp_call.failed" if failed else "response.mcp_call.completed"
        return [_ref(kind, item, at), _done(at, item)]

    def step_ended(self, step: int) -> list[Event]:
        """The turn is committed: its message is complete."""
        state = self._step(step)
        state.parser.finish()
        events = [e for found in state.parser.drain() for e in self._prose(step, state, found)]
        return events + self._close(state, "completed")

    def _close(self, state: _Step, status: str) -> list[Event]:
        if state.message is None or self.items[state.message]["status"] != "in_progress":
            return []
        item, at = self.items[state.message], state.message
        item["status"] = status
        said = {"content_index": 0, "text": state.text, "logprobs": []}
        text_done = _ref("response.output_text.done", item, at) | said
        return [text_done, _part(item, at, "done"), _done(at, item)]

    def awaited(self, calls: Sequence[ToolCall | ToolResult]) -> list[Event]:
        """The run's end: the calls of the client's that the response awaits."""
        events: list[Event] = []
        for call in calls:
            if not isinstance(call, ToolCall):
                continue
            at = len(self.items)
            step, _, index = call.id.removeprefix("call_").partition("_")
            item = {
                "id": f"fc_{self.tag}_{step}_{index}",
                "type": "function_call",
                "call_id": public_call_id(self.tag, call.id),
                "name": call.name,
                "arguments": dumps(call.arguments),
                "status": "completed",
            }
            self.items.append(item)
            added = _added(at, item | {"arguments": "", "status": "in_progress"})
            delta = _ref("response.function_call_arguments.delta", item, at) | {"delta": item["arguments"]}
            said = {"arguments": item["arguments"], "name": call.name}
            done = _ref("response.function_call_arguments.done", item, at) | said
            events += [added, delta, done, _done(at, item)]
        return events

    def cut_short(self) -> list[Event]:
        """The run ended with a turn uncommitted (cancelled, failed): its message stays incomplete."""
        return [event for state in self.steps.values() for event in self._close(state, "incomplete")]


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": [part]}


def _ref(kind: str, item: dict[str, Any], at: int) -> Event:
    return {"type": kind, "item_id": item["id"], "output_index": at}


def _added(at: int, item: dict[str, Any]) -> Event:
    return {"type": "response.output_item.added", "output_index": at, "item": json.loads(json.dumps(item))}


def _done(at: int, item: dict[str, Any]) -> Event:
    return {"type": "response.output_item.done", "output_index": at, "item": json.loads(json.dumps(item))}


def _part(item: dict[str, Any], at: int, how: str) -> Event:
    part = {"type": "output_text", "text": item["content"][0]["text"], "annotations": []}
    return _ref(f"response.content_part.{how}", item, at) | {"content_index": 0, "part": part}


def items_of_turns(
    turns: Sequence[str], tag: str, client_tools: frozenset[str], awaiting: Sequence[ToolCall | ToolResult]
) -> list[dict[str, Any]]:
    """The output items of a run's committed turns (and its awaited calls, once it ended awaiting them)."""
    output = Output(tag, client_tools)
    assistant = [n for n, turn in enumerate(turns) if turn.startswith("<|im_start|>assistant\n")]
    for step, at in enumerate(assistant):
        results = _results(turns[at + 1]) if at + 1 < len(turns) else []
        _replay(output, step, _body(turns[at]), results)
    output.awaited(awaiting)
    return output.items


def _replay(output: Output, step: int, raw: str, results: list[dict[str, Any]]) -> None:
    """One committed turn, in the order its stream would have told it."""
    state = output._step(step)
    index = 0
    for found in state.parser.feed(raw):
        if isinstance(found, ToolCallReady | ToolCallFailed):
            payload = results[index] if index < len(results) else None
            if isinstance(found, ToolCallReady) and _ran(found.call, payload, output.client_tools):
                assert payload is not None
                output.call(step, index, found.call.name, found.call.arguments)
                output.result(step, index, *_outcome(payload))
            index += 1
        else:
            output._prose(step, state, found)
    output.step_ended(step)


def _ran(call: ToolCall, payload: dict[str, Any] | None, client_tools: frozenset[str]) -> bool:
    if payload is None or call.name in client_tools:
        return False
    error = payload.get("error")
    return not (isinstance(error, dict) and error.get("type") in REFUSED)


def _outcome(payload: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    error = payload.get("error")
    if isinstance(error, dict):
        return None, {"type": error.get("type"), "message": error.get("message")}
    return json.dumps(payload.get("content"), ensure_ascii=False, default=str), None


def _body(turn: str) -> str:
    return turn.split("\n", 1)[1].removesuffix("<|im_end|>\n")


def _results(turn: str) -> list[dict[str, Any]]:
    if not turn.startswith("<|im_start|>tool\n"):
        return []
    found = []
    for block in _body(turn).split("<tool_response>\n")[1:]:
        payload = block.rsplit("\n</tool_response>", 1)[0]
        try:
            found.append(json.loads(payload))
        except ValueError:
            found.append({})
    return found
