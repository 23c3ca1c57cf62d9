"""A scripted engine for Ray Serve LLM: the production serving path (LLMServer deployments, their placement
groups, the session router) with exact Hermes output instead of a GPU model behind it.

``build_llm_deployment(llm_config(preset), bind_kwargs={"engine_cls": ScriptedLLMEngine})`` reserves the
preset's real placement (on fake GPUs in tests) and answers ``/v1/completions``-style requests the way a
Hermes model does: a ``<tool_call>`` first, an answer once the prompt holds a tool response. Every answer
names the replica that produced it, so tests can see which replica served each step of a conversation.

It implements Ray's engine protocol, which Ray exports only from an internal module (pinned Ray 2.60).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine

TOOL_CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call>'


def scripted_reply(prompt: str, replica: str) -> str:
    """What the scripted model says next: call a tool, or answer once the last turn is a tool response."""
    last_turn = prompt.rsplit("<|im_start|>", 2)[-2] if prompt.count("<|im_start|>") >= 2 else ""
    if last_turn.startswith("tool\n"):
        return f"The result is in. (replica {replica})"
    return TOOL_CALL


class ScriptedLLMEngine(LLMEngine):  # type: ignore[misc]
    """Ray Serve LLM's engine protocol, answered from a script (completions only; no GPU, no weights)."""

    def __init__(self, llm_config: Any) -> None:
        self._model = str(llm_config.model_id)
        self.replica = uuid.uuid4().hex[:8]

    async def start(self) -> None:
        return None

    async def check_health(self) -> None:
        return None

    def routing_stats(self) -> dict[str, Any]:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        raise NotImplementedError("the scripted engine has no LoRA adapters")

    async def reset_prefix_cache(self) -> None:
        return None

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the scripted engine serves raw completions only")
        yield  # pragma: no cover - makes this an async generator

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the scripted engine serves raw completions only")
        yield  # pragma: no cover

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError("the scripted engine serves raw completions only")
        yield  # pragma: no cover

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        prompt = request.prompt if isinstance(request.prompt, str) else "".join(map(str, request.prompt))
        text = scripted_reply(prompt, self.replica)
        created, ident = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if not getattr(request, "stream", False):
            from ray.serve.llm.openai_api_models import CompletionResponse  # noqa: PLC0415

            yield CompletionResponse(**_body(ident, created, self._model, text, "stop", final=True))
            return
        for start in range(0, len(text), 8):
            piece = _body(ident, created, self._model, text[start : start + 8], None, final=False)
            yield f"data: {json.dumps(piece)}\n\n"
        yield f"data: {json.dumps(_body(ident, created, self._model, '', 'stop', final=True))}\n\n"
        yield "data: [DONE]\n\n"


def _body(
    ident: str, created: int, model: str, text: str, finish: str | None, *, final: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    if final:
        body["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return body
