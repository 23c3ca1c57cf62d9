"""A response's events in the Responses streaming shape, each with its ``sequence_number``, resumable with
``starting_after``.

The events are a pure function of the run's event stream (read from its start, through the process's
``EventHub``) and of the response once it is over, so a stream read again from the start numbers every
event as before: resuming after N sends exactly the events after N, without a gap or a duplicate, for as
long as the run's events are kept. They begin with ``response.created`` and ``response.in_progress`` (the
response as created), and end with ``response.completed``, ``response.incomplete`` (also for a cancelled
response: its status says so) or ``response.failed``, which carry the whole response.

A step that another worker took over streams its text again from the turn's start; what was sent already
is not sent twice (the text a greedy or scripted model writes again is the same).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from orchestrator.api.response_items import Event, Output
from orchestrator.api.responses import stored, tag_of, view
from orchestrator.api.service import Api
from orchestrator.api.sse import frame, run_events
from orchestrator.ports import RunSpec
from orchestrator.records import Event as RunEvent
from orchestrator.records import RunRecord

_KEEPALIVE_EVERY = 15
_FINAL = {"completed": "response.completed", "failed": "response.failed"}


@dataclass
class Translator:
    """Run events in, Responses events out (without sequence numbers)."""

    output: Output
    seen: dict[int, str] = field(default_factory=dict)  # each step's text so far
    again: dict[int, str] = field(default_factory=dict)  # a taken-over step's text, streamed again

    def on(self, event: RunEvent) -> list[Event]:
        data, output = event.data, self.output
        if event.kind == "delta":
            return self._text(int(data["step"]), str(data["text"]))
        if event.kind == "tool_call":
            return output.call(int(data["step"]), int(data["index"]), str(data["name"]), data["arguments"])
        if event.kind == "tool_result":
            content = data.get("content") if data.get("ok") else None
            return output.result(int(data["step"]), int(data["index"]), content, data.get("error"))
        if event.kind == "step":
            return output.step_ended(int(data["step"]))
        if event.kind == "resumed":
            self.again[int(data["step"])] = ""
        return []

    def _text(self, step: int, text: str) -> list[Event]:
        if step in self.again:
            self.again[step] += text
            seen = self.seen.get(step, "")
            if len(self.again[step]) <= len(seen):
                return []
            text = self.again.pop(step)[len(seen) :]
        self.seen[step] = self.seen.get(step, "") + text
        return self.output.text(step, text)


async def response_events(
    api: Api, tenant: str, spec: RunSpec, record: RunRecord, starting_after: int = -1
) -> AsyncIterator[str]:
    """The SSE body: the response's events after ``starting_after``; a comment line now and then while
    nothing happens."""
    numbered = _Numbered(starting_after)
    created = view(spec, record, None)
    for kind, status in (("response.created", "queued"), ("response.in_progress", "in_progress")):
        for sent in numbered.send({"type": kind, "response": created | {"status": status}}):
            yield sent
    translator = Translator(Output(tag_of(spec.run_id), frozenset(spec.client_tools)))
    idle = -1
    async with contextlib.aclosing(run_events(api.hub, tenant, spec.run_id, "0-0")) as events:
        async for event in events:
            if event is None:
                idle += 1
                if idle % _KEEPALIVE_EVERY == 0:
                    yield ": keep-alive\n\n"
                continue
            if event.kind in ("finished", "failed"):
                break
            for sent in numbered.send(*translator.on(event)):
                yield sent
    for sent in numbered.send(*await _end(api, tenant, spec.run_id, translator)):
        yield sent


async def _end(api: Api, tenant: str, response_id: str, translator: Translator) -> list[Event]:
    """The response is over: what is left open is cut short, the awaited calls are told, then the end."""
    (spec, record), turns = await stored(api, tenant, response_id)
    response = view(spec, record, turns)
    events = [*translator.output.cut_short(), *translator.output.awaited(record.awaiting)]
    kind = _FINAL.get(response["status"], "response.incomplete")
    return [*events, {"type": kind, "response": response}]


@dataclass
class _Numbered:
    """Numbers every event; sends only those after ``starting_after``."""

    starting_after: int
    number: int = -1

    def send(self, *events: Event) -> list[str]:
        sent = []
        for event in events:
            self.number += 1
            if self.number > self.starting_after:
                numbered = {"type": event["type"], "sequence_number": self.number, **event}
                sent.append(frame(numbered, event=event["type"]))
        return sent
