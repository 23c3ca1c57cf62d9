"""What our two Ray Serve LLM engine classes (scripted, local) share: Ray's engine protocol (exported by Ray
only from an internal module; pinned Ray 2.60) answered for a completions-only engine with no LoRA
adapters and no prefix cache to reset. Subclasses implement ``start``, ``check_health`` and
``completions``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine


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
