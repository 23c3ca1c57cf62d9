"""A scripted engine for Ray Serve LLM: the production serving path (LLMServer deployments, their placement
groups, the session router) with exact Hermes output instead of a GPU model behind it.

``build_llm_deployment(llm_config(preset), bind_kwargs={"engine_cls": ScriptedLLMEngine})`` reserves the
preset's real placement (on fake GPUs in tests) and answers completions requests the way a Hermes model
does on the demo task: it calls ``calculator`` (when offered), then writes the result with ``files`` (when
offered), then answers. Every turn begins with ``(replica ID)``, so tests can see which replica served
each step of a conversation. Output streams token by token under a latency model read from the config's
``experimental_configs["caduceus_scripted"]`` (``first_token_s``, ``per_token_s``; a 70B on 8 GPUs is
about 0.1 and 0.013), through the orchestrator's own ``ScriptedEngine``.

It implements Ray's engine protocol, which Ray exports only from an internal module (pinned Ray 2.60).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from deploy.llm_engine_base import CompletionReply, CompletionsOnlyEngine
from deploy.telemetry import TELEMETRY_KEY
from deploy.telemetry import start as start_telemetry
from orchestrator.engines.scripted import Latency, ScriptedEngine
from orchestrator.ports import Chunk, CompletionRequest, Sampling
from orchestrator.tracing import Tracing, record_usage
from orchestrator.tracing.names import (
    LLM_REQUEST_SPAN,
    REQUEST_MAX_TOKENS,
    REQUEST_MODEL,
    TIME_TO_FIRST_TOKEN,
)
from toolbox.hermes import STOP

EXPRESSION = "17 * 23"
LATENCY_KEY = "caduceus_scripted"
_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.DOTALL)


def _call(name: str, arguments: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _offered(prompt: str, name: str) -> bool:
    tools = prompt[: prompt.rfind("</tools>")] if "</tools>" in prompt else ""
    return f'"name": "{name}"' in tools


def _number(payload: str) -> str:
    """The first number in a tool response's content (the calculator's result)."""
    found = re.search(r'"content":\s*(?:\{[^{}]*?:\s*)?"?(-?[0-9][0-9.]*)', payload)
    return found.group(1) if found else "unknown"


def scripted_reply(prompt: str, replica: str) -> str:
    """The next turn of the demo task: compute, then store, then answer, each when the tool is offered."""
    current = prompt[prompt.rfind("<|im_start|>user\n") :]
    responses = _RESPONSE.findall(current)
    tag = f"(replica {replica}) "
    if not responses and _offered(prompt, "calculator"):
        return tag + _call("calculator", {"expression": EXPRESSION})
    result = _number(responses[0]) if responses else ""
    if len(responses) == 1 and _offered(prompt, "files"):
        return tag + _call("files", {"action": "write", "path": "result.txt", "content": result})
    if not responses:
        return tag + "Hello from the scripted Hermes engine."
    stored = " and wrote it to result.txt" if len(responses) > 1 else ""
    return tag + f"{EXPRESSION} = {result}; I computed it with the calculator{stored}."


class ScriptedLLMEngine(CompletionsOnlyEngine):
    """Ray Serve LLM's engine protocol, answered from a script (completions only; no GPU, no weights)."""

    kind = "scripted"

    def __init__(self, llm_config: Any) -> None:
        self._model = str(llm_config.model_id)
        latency = dict(llm_config.experimental_configs.get(LATENCY_KEY) or {})
        self._latency = Latency(float(latency.get("first_token_s", 0)), float(latency.get("per_token_s", 0)))
        self.replica = uuid.uuid4().hex[:8]
        # As vLLM does given an OTLP endpoint: each request is a span in the caller's trace.
        self._telemetry = start_telemetry("llm", llm_config.experimental_configs.get(TELEMETRY_KEY))
        self._tracing = Tracing()

    async def start(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        prompt = request.prompt if isinstance(request.prompt, str) else "".join(map(str, request.prompt))
        stop = request.stop if isinstance(request.stop, list) else [request.stop] if request.stop else []
        ours = CompletionRequest(
            prompt, request.max_tokens or 1024, tuple(stop) or STOP, Sampling(request.temperature or 0.0)
        )
        engine = ScriptedEngine(lambda text: scripted_reply(text, self.replica), latency=self._latency)
        reply = CompletionReply(self._model)
        headers = getattr(raw_request_info, "headers", None)
        attributes = {REQUEST_MODEL: self._model, REQUEST_MAX_TOKENS: ours.max_tokens}
        with self._tracing.served(LLM_REQUEST_SPAN, headers, attributes, current=False) as span:
            started, chunks = time.monotonic(), list[Chunk]()
            async for chunk in engine.stream(ours):
                if not chunks:
                    span.set_attribute(TIME_TO_FIRST_TOKEN, time.monotonic() - started)
                chunks.append(chunk)
                if request.stream:
                    yield reply.event(chunk)
            last = chunks[-1] if chunks else None
            if last is not None:
                record_usage(span, last.prompt_tokens or 0, last.completion_tokens or 0, last.finish_reason)
        yield reply.whole(chunks) if not request.stream else "data: [DONE]\n\n"
