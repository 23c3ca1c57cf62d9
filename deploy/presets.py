"""Model presets: the four Hermes models on their tensor-parallel GPU layouts, as Ray Serve LLM configs.

Each preset becomes one ``ray.serve.llm.LLMConfig``: vLLM engine arguments (tensor and pipeline parallel
sizes, the model's real context length, prefix caching, the ``hermes`` tool-call parser for clients of
the OpenAI tools API), a placement group per replica (``STRICT_PACK`` keeps a tensor-parallel group inside
one node's NVLink domain; the bf16 405B spans two nodes with ``PACK``), explicit autoscaling thresholds
(Ray's defaults never scale), health checks sized for the model, and the consistent-hash router keyed on
the ``x-session-id`` header, which the orchestrator sets to the conversation id so every step of a
conversation reaches the replica that holds its KV prefix cache.

``placement(name)`` asks Ray Serve LLM itself what each replica will reserve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

GPUS_PER_NODE = 8
SESSION_ROUTER = "ray.serve.experimental.consistent_hash_router:ConsistentHashRouter"
LLAMA3_CONTEXT = 8_192
LLAMA31_CONTEXT = 131_072


@dataclass(frozen=True)
class Preset:
    """One model on one GPU layout, with the serving knobs sized for it."""

    name: str
    model_source: str
    max_model_len: int
    tensor_parallel_size: int
    pipeline_parallel_size: int = 1
    strategy: Literal["STRICT_PACK", "PACK"] = "STRICT_PACK"
    quantization: str | None = None
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: int = 32
    max_ongoing_requests: int = 64
    # Large models answer health checks slowly while busy with long prefills; give them room.
    health_check_timeout_s: int = 30
    health_check_period_s: int = 10

    @property
    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "hermes-3-405b",
            "NousResearch/Hermes-3-Llama-3.1-405B-FP8",
            LLAMA31_CONTEXT,
            tensor_parallel_size=8,
            quantization="fp8",
            target_ongoing_requests=16,
            max_ongoing_requests=32,
            health_check_timeout_s=120,
            health_check_period_s=30,
        ),
        Preset(
            "hermes-3-405b-bf16",
            "NousResearch/Hermes-3-Llama-3.1-405B",
            LLAMA31_CONTEXT,
            tensor_parallel_size=8,
            pipeline_parallel_size=2,
            strategy="PACK",
            target_ongoing_requests=16,
            max_ongoing_requests=32,
            health_check_timeout_s=180,
            health_check_period_s=30,
        ),
        Preset(
            "hermes-2-theta-70b",
            "NousResearch/Hermes-2-Theta-Llama-3-70B",
            LLAMA3_CONTEXT,
            tensor_parallel_size=8,
            health_check_timeout_s=60,
            health_check_period_s=20,
        ),
        Preset(
            "hermes-2-theta-70b-tp4",
            "NousResearch/Hermes-2-Theta-Llama-3-70B",
            LLAMA3_CONTEXT,
            tensor_parallel_size=4,
            max_replicas=4,
            target_ongoing_requests=24,
            max_ongoing_requests=48,
            health_check_timeout_s=60,
            health_check_period_s=20,
        ),
        Preset(
            "hermes-2-pro-8b",
            "NousResearch/Hermes-2-Pro-Llama-3-8B",
            LLAMA3_CONTEXT,
            tensor_parallel_size=1,
            max_replicas=8,
            target_ongoing_requests=64,
            max_ongoing_requests=128,
        ),
        Preset(
            "hermes-3-3b",
            "NousResearch/Hermes-3-Llama-3.2-3B",
            LLAMA31_CONTEXT,
            tensor_parallel_size=1,
            max_replicas=8,
            target_ongoing_requests=64,
            max_ongoing_requests=128,
        ),
    )
}


def preset(name: str) -> Preset:
    """The preset called ``name``; a ``KeyError`` that lists the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def engine_kwargs(p: Preset) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": p.tensor_parallel_size,
        "pipeline_parallel_size": p.pipeline_parallel_size,
        "max_model_len": p.max_model_len,
        "enable_prefix_caching": True,
        "enable_auto_tool_choice": True,
        "tool_call_parser": "hermes",
    }
    if p.quantization:
        kwargs["quantization"] = p.quantization
    return kwargs


def deployment_config(p: Preset) -> dict[str, Any]:
    return {
        "autoscaling_config": {
            "min_replicas": p.min_replicas,
            "max_replicas": p.max_replicas,
            "target_ongoing_requests": p.target_ongoing_requests,
            # Loading weights takes minutes: scale up soon, scale down reluctantly.
            "upscale_delay_s": 30,
            "downscale_delay_s": 600,
        },
        "max_ongoing_requests": p.max_ongoing_requests,
        "health_check_timeout_s": p.health_check_timeout_s,
        "health_check_period_s": p.health_check_period_s,
        "request_router_config": {
            "request_router_class": SESSION_ROUTER,
            "request_router_kwargs": {"num_virtual_nodes": 100, "num_fallback_replicas": 2},
        },
    }


def llm_config(p: Preset, **overrides: Any) -> Any:
    """The ``ray.serve.llm.LLMConfig`` for ``p`` (imports Ray Serve LLM, which needs vLLM importable)."""
    from ray.serve.llm import LLMConfig  # noqa: PLC0415 - several seconds to import: only when asked

    options: dict[str, Any] = {
        "model_loading_config": {"model_id": p.name, "model_source": p.model_source},
        "engine_kwargs": engine_kwargs(p),
        "placement_group_config": {"strategy": p.strategy, "bundle_per_worker": {"GPU": 1}},
        "deployment_config": deployment_config(p),
    }
    options.update(overrides)
    return LLMConfig(**options)


#: A model on the CPU: SmolLM2-135M's context, and a replica sized for a small machine.
CPU_CONTEXT = 8_192


@dataclass(frozen=True)
class CpuLayout:
    """How a CPU replica differs from a GPU one: the device, its KV-cache space, its threads (one CPU per
    tensor-parallel worker) and a placement of CPU-only bundles (pinned to ``resource`` when given)."""

    tensor_parallel_size: int = 1
    kv_cache_gib: float = 1.0
    resource: str | None = None


def cpu_preset(
    name: str, model_dir: str, *, context: int = CPU_CONTEXT, tensor_parallel_size: int = 1
) -> Preset:
    """A preset for a small model on the CPU: few requests at a time, scaled on a low load."""
    return Preset(
        name,
        model_dir,
        context,
        tensor_parallel_size=tensor_parallel_size,
        max_replicas=1,
        target_ongoing_requests=4,
        max_ongoing_requests=16,
        # Start-up imports vLLM in several processes: minutes on a busy two-core machine.
        health_check_timeout_s=60,
    )


def cpu_llm_config(p: Preset, layout: CpuLayout, **overrides: Any) -> Any:
    """``llm_config(p)`` on vLLM's CPU backend: the same builder as the GPU presets, with the CPU as the
    accelerator, float32 weights without graph compilation (faster than bf16 on AVX2, and no minutes of
    torch.compile at start-up), a KV-cache space in GiB, and one CPU bundle per tensor-parallel worker."""
    bundle: dict[str, float] = {"CPU": 1}
    if layout.resource:
        bundle[layout.resource] = 1
    kwargs = engine_kwargs(p) | {"dtype": "float32", "enforce_eager": True}
    env = {
        "VLLM_CPU_KVCACHE_SPACE": f"{layout.kv_cache_gib:g}",
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
    }
    options: dict[str, Any] = {
        "engine_kwargs": kwargs,
        "accelerator_config": {"kind": "cpu"},
        "placement_group_config": {
            "bundles": [dict(bundle) for _ in range(p.tensor_parallel_size)],
            "strategy": "STRICT_PACK",
        },
        "runtime_env": {"env_vars": env},
    }
    return llm_config(p, **(options | overrides))


def placement(p: Preset) -> dict[str, Any]:
    """What one replica of ``p`` reserves, as computed by Ray Serve LLM's own engine config."""
    engine = llm_config(p).get_engine_config()
    bundles: list[dict[str, float]] = list(engine.placement_bundles)
    gpus = int(sum(bundle.get("GPU", 0) for bundle in bundles))
    return {
        "bundles": len(bundles),
        "strategy": str(engine.placement_strategy),
        "gpus": gpus,
        "nodes": math.ceil(gpus / GPUS_PER_NODE),
        "tensor_parallel_size": int(engine.tensor_parallel_degree),
        "pipeline_parallel_size": int(engine.pipeline_parallel_degree),
        "max_model_len": int(engine.engine_kwargs["max_model_len"]),
    }
