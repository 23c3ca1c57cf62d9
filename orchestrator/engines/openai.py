"""Raw-prompt streaming against any OpenAI-compatible ``/v1/completions`` endpoint.

vLLM, Ray Serve LLM and llama.cpp's server all speak it. The prompt is sent as rendered (never through a
chat template, which would re-render history and break the append-only prompt), with the Hermes stop
strings, and with ``skip_special_tokens`` off so that ``<tool_call>`` survives detokenization. The thread id
goes in the ``x-session-id`` header, which session-affinity routers use to keep a
conversation on the replica whose prefix cache holds it; the W3C ``traceparent`` header carries the
run's trace. A request's decoding constraint goes in vLLM's ``structured_outputs`` option.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterator, Mapping
from typing import Any

import httpx

from orchestrator.errors import ContextOverflowError, EngineError
from orchestrator.ports import Chunk, CompletionRequest
from orchestrator.tracing import carrier

_OVERFLOW_HINTS = ("context length", "context size", "context window", "maximum context", "too long")


class OpenAICompletionsEngine:
    """``base_url`` is the server root (``http://host:8000``); ``/v1/completions`` is appended."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        extra_body: Mapping[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
        )
        self._model = model
        self._extra = dict(extra_body if extra_body is not None else {"skip_special_tokens": False})

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: CompletionRequest) -> dict[str, Any]:
        return completion_body(self._model, request, self._extra)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        # The trace context travels with the call, so the serving side's spans join the run's trace.
        headers = carrier()
        if request.session_id:
            headers["x-session-id"] = request.session_id
        try:
            async with self._client.stream(
                "POST", "/v1/completions", json=self._body(request), headers=headers
            ) as response:
                if response.status_code >= 400:
                    raise_for(response.status_code, (await response.aread()).decode("utf-8", "replace"))
                async for chunk in _chunks(response):
                    yield chunk
        except httpx.HTTPError as exc:
            raise EngineError(f"{self._model}: {type(exc).__name__}: {exc}") from exc


def completion_body(model: str, request: CompletionRequest, extra: Mapping[str, Any]) -> dict[str, Any]:
    """The streamed OpenAI completions body for ``request`` (``extra``: server-specific options)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": request.sampling.temperature,
        "top_p": request.sampling.top_p,
        "stop": list(request.stop),
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    if request.sampling.seed is not None:
        body["seed"] = request.sampling.seed
    body.update(structured_outputs(request))
    return body


def structured_outputs(request: CompletionRequest) -> dict[str, Any]:
    """The request's decoding constraint as vLLM's completions option (0.29:
    ``CompletionRequest.structured_outputs``, one object whose ``structural_tag`` is the xgrammar document
    as a JSON string); nothing when the request has none."""
    if request.constraint is None:
        return {}
    return {"structured_outputs": {"structural_tag": json.dumps(request.constraint)}}


async def _chunks(response: httpx.Response) -> AsyncGenerator[Chunk, None]:
    """Server-sent events to chunks; the last chunk carries the finish reason and usage."""
    events = CompletionEvents()
    async for line in response.aiter_lines():
        event = events.data(line)
        if event is DONE:
            break
        if event is not None:
            for chunk in events.feed(event):
                yield chunk
    yield events.last()


#: ``CompletionEvents.data``'s answer to the stream's ``data: [DONE]`` line.
DONE: dict[str, Any] = {}


class CompletionEvents:
    """Folds an OpenAI completions stream (its ``data:`` lines, or their decoded events) into chunks: the
    text as it comes, then one last chunk with the finish reason and the usage. Shared by every engine
    that reads this format (over HTTP here; from a Ray Serve LLM handle in ``deploy``)."""

    def __init__(self) -> None:
        self._finish: str | None = None
        self._usage: dict[str, Any] = {}

    @staticmethod
    def data(line: str) -> dict[str, Any] | None:
        """The event a ``data:`` line carries, ``DONE`` at the end, ``None`` for other lines."""
        if not line.startswith("data:"):
            return None
        payload = line[5:].strip()
        if payload == "[DONE]":
            return DONE
        try:
            event = json.loads(payload)
        except json.JSONDecodeError:
            raise EngineError(f"the engine streamed a malformed event: {payload[:200]!r}") from None
        if not isinstance(event, dict):
            raise EngineError(f"the engine streamed a malformed event: {payload[:200]!r}")
        return event

    def feed(self, event: Mapping[str, Any]) -> Iterator[Chunk]:
        if "error" in event:
            raise_for(500, json.dumps(event["error"]))
        for choice in event.get("choices") or []:
            if choice.get("text"):
                yield Chunk(text=choice["text"])
            self._finish = choice.get("finish_reason") or self._finish
        self._usage = event.get("usage") or self._usage

    def last(self) -> Chunk:
        return Chunk(
            finish_reason=self._finish or "stop",
            prompt_tokens=self._usage.get("prompt_tokens"),
            completion_tokens=self._usage.get("completion_tokens"),
        )


def raise_for(status: int, text: str) -> None:
    """The engine refused a request: ``ContextOverflowError`` for a prompt too long, else ``EngineError``."""
    if status == 400 and any(hint in text.lower() for hint in _OVERFLOW_HINTS):
        raise ContextOverflowError(f"the engine refused the prompt as too long: {text[:500]}")
    raise EngineError(f"the engine answered HTTP {status}: {text[:500]}")
