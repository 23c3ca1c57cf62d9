"""The orchestrator's ``ChatEngine`` port on a Ray Serve LLM deployment, through its handle.

Each request goes to the model's ``LLMServer`` deployment as an OpenAI completions request (the rendered
prompt as is, the Hermes stop strings, special tokens kept so ``<tool_call>`` survives, the decoding
constraint as vLLM's ``structured_outputs``), with the run's thread id as the handle's ``session_id``: the
deployment's consistent-hash router then sends every step of a conversation to the replica whose prefix
cache holds it. The run's trace context travels in the request's headers.

``LLMServer.completions`` streams lists of ``data: {json}`` lines (it batches them), or an
``ErrorResponse``; they are read by the same code as the HTTP engine (``CompletionEvents``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Any

from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.openai_api_models import CompletionRequest as LLMCompletionRequest
from ray.serve.llm.openai_api_models import ErrorResponse

from orchestrator.engines.openai import DONE, CompletionEvents, completion_body, raise_for
from orchestrator.errors import EngineError
from orchestrator.ports import Chunk, CompletionRequest
from orchestrator.tracing import carrier


def llm_request(model: str, request: CompletionRequest) -> Any:
    """The Ray Serve LLM (vLLM) completions request for one of the orchestrator's."""
    return LLMCompletionRequest(**completion_body(model, request, {"skip_special_tokens": False}))


class ServeLLMEngine:
    """Streams completions from the ``LLMServer`` deployment behind ``handle``, serving ``model``."""

    def __init__(self, handle: DeploymentHandle, model: str) -> None:
        self._handle, self._model = handle, model

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        options: dict[str, Any] = {"stream": True}
        if request.session_id:
            options["session_id"] = request.session_id
        handle = self._handle.options(**options)
        events = CompletionEvents()
        try:
            responses = handle.completions.remote(
                llm_request(self._model, request), RawRequestInfo(headers=carrier())
            )
            async for item in responses:
                for chunk in _chunks(events, item):
                    yield chunk
        except (EngineError, GeneratorExit):
            raise
        except Exception as exc:  # a replica died, the deployment is gone, a request was refused
            raise EngineError(f"{self._model}: {type(exc).__name__}: {exc}") from exc
        yield events.last()


def _chunks(events: CompletionEvents, item: Any) -> Iterable[Chunk]:
    for piece in item if isinstance(item, list) else [item]:
        if isinstance(piece, ErrorResponse):
            raise_for(int(piece.error.code), piece.error.message)
        if not isinstance(piece, str):
            raise EngineError(f"the LLM deployment answered {type(piece).__name__}, not a stream")
        for line in piece.splitlines():
            event = events.data(line)
            if event is not None and event is not DONE:
                yield from events.feed(event)
