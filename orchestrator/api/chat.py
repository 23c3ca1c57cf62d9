"""``POST /v1/chat/completions``: a Hermes model in OpenAI's chat-completions shape. The client runs its own
tools: the request is one completion from the engine (``ChatEngine``, the model's deployment; no run, no
store), rendered by our toolbox (``chat_prompt``) and read by our parser, so the answer's ``tool_calls``
carry JSON-object arguments and end with ``finish_reason: "tool_calls"``.

Streaming sends the model's text as it comes (prose only: what the parser holds back while a tag may be
starting waits for it), and each call as one tool-call delta the moment its block closes (a call's
arguments are complete JSON only then; streaming equals batch). Content is the prose outside the blocks,
with the whole answer's leading and trailing whitespace left out, streamed or not. With ``tool_choice``
``none`` no call is returned; with ``parallel_tool_calls`` false, the first call only; a block that is not
a call (broken JSON, which constrained decoding rules out) is not returned.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.api.chat_models import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatUsage,
    FunctionCallOut,
    ToolCallOut,
)
from orchestrator.api.chat_prompt import Prepared
from orchestrator.api.errors import ApiError
from orchestrator.api.sse import frame
from orchestrator.context import EstimateCounter
from orchestrator.errors import ContextOverflowError, EngineError
from orchestrator.ports import ChatEngine, Chunk
from toolbox.hermes import ContentDelta, StreamParser, ToolCallReady, check_json_answer
from toolbox.protocol import ToolCall, dumps

FinishReason = Literal["stop", "length", "tool_calls"]


@dataclass
class Trim:
    """Streams text with the whole's leading and trailing whitespace left out: what is held back is the
    whitespace that may turn out to be trailing."""

    started: bool = False
    held: str = ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        body = (self.held + text).rstrip()
        self.held = (self.held + text)[len(body) :]
        return body


@dataclass
class Answer:
    """What the model said, as it comes: ``text`` pieces and ``calls``; ``last``: the engine's last chunk."""

    calls: list[ToolCall] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    last: Chunk = field(default_factory=Chunk)
    raw: str = ""


Piece = str | ToolCall  # a content delta, or a call the moment it is complete


async def pieces(engine: ChatEngine, prepared: Prepared, answer: Answer) -> AsyncGenerator[Piece, None]:
    """The answer's content deltas and calls, in order; ``answer`` holds the whole once it is exhausted."""
    parser, trim = StreamParser(id_prefix=prepared.call_prefix), Trim()
    try:
        async with aclosing(engine.stream(prepared.completion)) as chunks:
            async for chunk in chunks:
                for piece in _read(parser.feed(chunk.text), trim, prepared, answer):
                    yield piece
                if chunk.finish_reason is not None:
                    answer.last = chunk
                if parser.done:
                    break
    except ContextOverflowError:
        raise ApiError(
            400, "context_length_exceeded", "the messages do not fit the model's context"
        ) from None
    except EngineError:
        raise ApiError(502, "model_error", "the model failed to answer; try again") from None
    answer.raw = parser.finish().text
    for piece in _read(parser.drain(), trim, prepared, answer):
        yield piece


def _read(events: list[Any], trim: Trim, prepared: Prepared, answer: Answer) -> list[Piece]:
    found: list[Piece] = []
    for event in events:
        if isinstance(event, ContentDelta):
            text = trim.feed(event.text)
            if text:
                answer.text.append(text)
                found.append(text)
        elif isinstance(event, ToolCallReady) and _returned(event.call, prepared, answer):
            answer.calls.append(event.call)
            found.append(event.call)
    return found


def _returned(call: ToolCall, prepared: Prepared, answer: Answer) -> bool:
    if prepared.choice == "none":
        return False
    return not (prepared.single and answer.calls)


def finish_reason(answer: Answer) -> FinishReason:
    if answer.calls:
        return "tool_calls"
    return "length" if answer.last.finish_reason == "length" else "stop"


def usage(prepared: Prepared, answer: Answer) -> ChatUsage:
    counter = EstimateCounter()
    prompt = answer.last.prompt_tokens or counter.count(prepared.completion.prompt)
    completion = answer.last.completion_tokens or counter.count(answer.raw)
    return ChatUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def call_out(call: ToolCall) -> ToolCallOut:
    return ToolCallOut(id=call.id, function=FunctionCallOut(name=call.name, arguments=dumps(call.arguments)))


async def complete(engine: ChatEngine, prepared: Prepared, completion_id: str) -> ChatCompletion:
    answer = Answer()
    async with aclosing(pieces(engine, prepared, answer)) as stream:
        async for _ in stream:
            pass
    content = "".join(answer.text)
    if prepared.json_mode and not answer.calls:
        content = _unfenced(content)
    message = ChatChoiceMessage(
        content=content if content or not answer.calls else None,
        tool_calls=[call_out(call) for call in answer.calls] or None,
    )
    return ChatCompletion(
        id=completion_id,
        created=int(time.time()),
        model=prepared.completion.model,
        choices=[ChatChoice(message=message, finish_reason=finish_reason(answer))],
        usage=usage(prepared, answer),
    )


def _unfenced(content: str) -> str:
    # A JSON answer in a ```json fence is the JSON inside it (HERMES.md section 5).
    if content.startswith("```") and check_json_answer(content, {}).ok:
        body = content.split("\n", 1)[1] if "\n" in content else content[3:]
        return body.rstrip().removesuffix("```").strip()
    return content


async def stream(engine: ChatEngine, prepared: Prepared, completion_id: str) -> AsyncIterator[str]:
    """The completion as OpenAI's chunks, then ``[DONE]``; an error after the first chunk travels as an
    error frame (the status line is sent already)."""
    head = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = prepared.completion.model
    yield frame(_chunk(head, {"role": "assistant", "content": ""}))
    answer, index = Answer(), 0
    try:
        async with aclosing(pieces(engine, prepared, answer)) as found:
            async for piece in found:
                if isinstance(piece, str):
                    yield frame(_chunk(head, {"content": piece}))
                    continue
                call = call_out(piece).model_dump() | {"index": index}
                index += 1
                yield frame(_chunk(head, {"tool_calls": [call]}))
    except ApiError as exc:
        yield frame({"error": {"type": "api_error", "code": exc.code, "message": exc.message}})
        return
    yield frame(_chunk(head, {}, finish_reason(answer)))
    if prepared.include_usage:
        yield frame(head | {"choices": [], "usage": usage(prepared, answer).model_dump()})
    yield frame("[DONE]")


def _chunk(head: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
