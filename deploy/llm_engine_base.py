"""What our two Ray Serve LLM engine classes (scripted, local) share: Ray's engine protocol (exported by Ray
only from an internal module; pinned Ray 2.60) answered for a completions-only engine with no LoRA
adapters and no prefix cache to reset (subclasses implement ``start``, ``check_health`` and
``completions``), and the OpenAI completion responses both build from the orchestrator's chunks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine

from orchestrator.ports import Chunk


class CompletionsOnlyEngine(LLMEngine):  # type: ignore[misc]
    """The protocol's other endpoints, refused with a message naming ``kind`` (the engine's name)."""

    kind = "this"

    def routing_stats(self) -> dict[str, Any]:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        raise NotImplementedError(f"the {self.kind} engine has no LoRA adapters")

    async def reset_prefix_cache(self) -> None:
        return None  # nothing is cached across requests

    async def chat(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError(f"the {self.kind} engine serves raw completions only")
        yield  # pragma: no cover - makes this an async generator

    async def embeddings(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError(f"the {self.kind} engine serves raw completions only")
        yield  # pragma: no cover

    async def transcriptions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        raise NotImplementedError(f"the {self.kind} engine serves raw completions only")
        yield  # pragma: no cover


class CompletionReply:
    """One completion's responses: server-sent events while streaming, or one CompletionResponse."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._id = f"cmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())

    def event(self, chunk: Chunk) -> str:
        return f"data: {json.dumps(self._body(chunk.text, chunk))}\n\n"

    def whole(self, chunks: list[Chunk]) -> Any:
        from ray.serve.llm.openai_api_models import CompletionResponse  # noqa: PLC0415

        return CompletionResponse(**self._body("".join(chunk.text for chunk in chunks), chunks[-1]))

    def _body(self, text: str, chunk: Chunk) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": chunk.finish_reason}
        body: dict[str, Any] = {
            "id": self._id,
            "object": "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [choice],
        }
        if chunk.finish_reason is not None:
            prompt, completion = chunk.prompt_tokens or 0, chunk.completion_tokens or 0
            body["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return body
