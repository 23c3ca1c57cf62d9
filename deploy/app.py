"""The Ray Serve application: ``build_app(args)``, importable as ``deploy.app:build_app`` for a RayService.

One application, four kinds of deployment, each delegating to the core packages::

    Api (ingress, FastAPI)   orchestrator.api.create_app over the Redis store: enqueues runs, reads state;
                             chat completions go straight to the models' handles (no run)
    Orchestrator             orchestrator.worker.Worker: takes runs from the Redis queue and drives the
                             agent loop; the model through ServeLLMEngine (handles, session-affine), the
                             tools through the ToolWorkers deployment
    ToolWorkers              workers.executor.Executor: runs each call in its sandbox
    LLMServer, one per model ray.serve.llm with vLLM (on a preset's GPUs, or on CPUs), one placement group
                             per replica, the consistent-hash router keyed on the conversation (the
                             scripted engine class stands in for vLLM in load benchmarks)

``args`` is the document ``deploy.config`` validates; an invalid one fails the build with every bad field
named. Secrets never travel in it: it names the environment variables that hold the Redis URL, its
password and the API keys, which the replicas read where they run.

Every replica imports this module, so what only the LLM deployments or the orchestrator need (Ray Serve
LLM, and through it vLLM: tens of seconds to import on two cores) is imported where it is used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from redis.asyncio import Redis

from deploy.autoscale import QUEUE_DEPTH, RUNS_IN_PROGRESS
from deploy.config import ConfigError, ModelConfig, ServiceConfig, load_config
from deploy.demo_tools import demo_registry
from deploy.model_files import model_directory
from deploy.presets import (
    CPU_CONTEXT,
    PRESETS,
    CpuLayout,
    Preset,
    cpu_llm_config,
    cpu_preset,
    deployment_config,
    llm_config,
)
from deploy.telemetry import TELEMETRY_KEY, ToolTelemetry
from deploy.telemetry import settings as telemetry_settings
from deploy.telemetry import start as start_telemetry
from orchestrator.api import create_app
from orchestrator.api.auth import parse_api_keys
from orchestrator.engines import ModelRouter
from orchestrator.loop import Agent
from orchestrator.ports import Limits
from orchestrator.redis import Link, RedisRunStore, RedisStore, RunQueue, connect
from orchestrator.tracing import carrier
from orchestrator.worker import Worker
from toolbox.protocol import ToolCall, ToolResult, ToolSpec
from workers.executor import Executor
from workers.registry import builtin_registry
from workers.sandbox import create_sandbox

log = logging.getLogger(__name__)
#: The LLM deployments' names start with this, then the served model name.
LLM_PREFIX = "LLM:"


def _env(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{what}: the environment variable {name} is not set where this replica runs")
    return value


def _redis(config: ServiceConfig) -> Redis:
    url = _env(config.redis.url_env, "redis.url_env")
    password = _env(config.redis.password_env, "redis.password_env")
    return connect(str(url), password=password)


def _pinned(resource: str, replicas: int | None = None, **options: Any) -> dict[str, Any]:
    """Deployment options that put every replica on a node advertising ``resource`` (the chart's groups)."""
    if replicas is not None:
        options["num_replicas"] = replicas
    return {"ray_actor_options": {"num_cpus": 0.5, "resources": {resource: 1}}, **options}


class _ToolWorkers:
    """Runs tool calls in sandboxes (the configured tool set), each in its conversation's scratch dir."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self,
        tools: str = "builtin",
        spare_hosts: int = 4,
        max_concurrent_calls: int = 16,
        telemetry: Mapping[str, Any] | None = None,
    ) -> None:
        self._telemetry = start_telemetry("tools", telemetry)
        registry = demo_registry(narrow=True) if tools == "demo" else builtin_registry()
        sandbox = create_sandbox(preload=registry.sandbox_modules(), spare=spare_hosts)
        self._executor = Executor(registry, sandbox=sandbox, max_concurrent=max_concurrent_calls)
        self._traced = ToolTelemetry(self._executor, sandbox)

    async def specs(self) -> list[ToolSpec]:
        return self._executor.specs()

    async def execute(
        self, call: ToolCall, conversation: str, trace: Mapping[str, str] | None = None
    ) -> ToolResult:
        """Run ``call`` in ``conversation``'s sandbox; ``trace``: the caller's span's context."""
        return await self._traced.execute(call, conversation, trace)

    async def keep_spare(self, spare: int) -> int:
        """Keep ``spare`` sandbox hosts ready from now on and wait until they are (before a known burst;
        the load benchmark's floor); returns how many are ready."""
        return await self._executor.sandbox.keep_spare(spare)

    async def __del__(self) -> None:
        await self._executor.close()
        if self._telemetry is not None:
            self._telemetry.close()


class RemoteTools:
    """The orchestrator's ``ToolExecutor`` port on the ToolWorkers deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def execute(self, call: ToolCall, conversation: str = "default") -> ToolResult:
        # The trace context goes with the call: the tool worker's span joins the run's trace.
        result: ToolResult = await self._handle.execute.remote(call, conversation, carrier())
        return result


class _Orchestrator:
    """Drives runs from the Redis queue until the replica stops; a dead replica's runs are taken over by
    the others once their leases lapse (``orchestrator.worker``)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self, args: Mapping[str, Any], llms: Mapping[str, DeploymentHandle], tools: DeploymentHandle
    ) -> None:
        config = load_config(dict(args), source="serve args")
        self._telemetry = start_telemetry("orchestrator", _telemetry(config))
        from deploy.serve_engine import ServeLLMEngine  # noqa: PLC0415 - imports vLLM's request types

        context = serve.get_replica_context()
        link = Link.of(_redis(config), worker=f"orchestrator-{context.replica_tag}")
        self._store = RedisRunStore(link)
        engine = ModelRouter({name: ServeLLMEngine(handle, name) for name, handle in llms.items()})
        agent = Agent(engine, RemoteTools(tools), self._store)
        self._queue = RunQueue(link)
        self.worker = Worker(
            self._store, self._queue, agent, concurrency=config.orchestrator.max_concurrent_runs
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.worker.serve(self._stop))

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """What ``deploy.autoscale.QueueDepthPolicy`` scales the orchestrators on."""
        return {QUEUE_DEPTH: float(await self._queue.depth()), RUNS_IN_PROGRESS: float(self.worker.running)}

    async def check_health(self) -> None:
        if self._task.done():
            raise RuntimeError(f"the orchestrator worker stopped: {self._task.exception()!r}")
        self.worker.check_health()  # each of its loops (intake, heartbeat) is still alive

    async def __del__(self) -> None:
        self._stop.set()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._store.link.redis.aclose()
        if self._telemetry is not None:
            self._telemetry.close()


class _Api:
    """The REST API (``orchestrator.api``): it enqueues runs and reads their state from Redis, and answers
    chat completions from the models' deployments (``llms``) directly."""

    async def __init__(  # type: ignore[misc]  # Serve awaits async constructors
        self,
        args: Mapping[str, Any],
        orchestrator: DeploymentHandle,
        tools: DeploymentHandle,
        llms: Mapping[str, DeploymentHandle],
    ) -> None:
        self._config = load_config(dict(args), source="serve args")
        self._telemetry = start_telemetry("api", _telemetry(self._config))
        # The orchestrator's handle is not called: binding it is what makes Serve deploy the orchestrators
        # as part of this application.
        self._orchestrator, self._tools = orchestrator, tools
        from deploy.serve_engine import ServeLLMEngine  # noqa: PLC0415 - imports vLLM's request types

        self._engine = ModelRouter({name: ServeLLMEngine(handle, name) for name, handle in llms.items()})

    async def __serve_build_asgi_app__(self) -> FastAPI:
        config = self._config
        specs: list[ToolSpec] = await self._tools.specs.remote()
        window = min(_context_window(model) for model in config.models)
        return create_app(
            RedisStore(_redis(config)),
            keys=parse_api_keys(_env(config.api_keys_env, "api_keys_env") or ""),
            tools=specs,
            models=config.model_names,
            limits=dataclasses.replace(Limits(), context_window=window),
            constrained_models=[m.served_name for m in config.models if m.constrained_by_default],
            rate_per_s=config.api.rate_per_s,
            burst=config.api.burst,
            engine=self._engine,
        )


# Serve's decorators, applied as calls: the classes above stay plain (and typed) for mypy.
ToolWorkers: Any = serve.deployment(name="ToolWorkers")(_ToolWorkers)
Orchestrator: Any = serve.deployment(name="Orchestrator")(_Orchestrator)
Api: Any = serve.deployment(name="Api")(serve.ingress()(_Api))


def _telemetry(config: ServiceConfig) -> dict[str, Any]:
    return telemetry_settings(config.otlp_endpoint, config.telemetry)


def _context_window(model: ModelConfig) -> int:
    if model.max_model_len:
        return model.max_model_len
    return PRESETS[model.preset].max_model_len if model.preset else CPU_CONTEXT


def llm_deployment(model: ModelConfig, telemetry: Mapping[str, Any] | None = None) -> Application:
    """The model's ``LLMServer`` deployment: its preset's layout (or a CPU layout) and serving knobs, the
    configured replica bounds, every placement bundle pinned to the model's Ray resource, and the engine.
    ``telemetry`` (``deploy.telemetry.settings``): vLLM sends its request spans to its ``otlp_endpoint``;
    the scripted engine records its own."""
    from ray.serve.llm import build_llm_deployment  # noqa: PLC0415 - see the module's docstring

    endpoint = (telemetry or {}).get("otlp_endpoint")
    if model.device == "cpu":
        return build_llm_deployment(_vllm_traced(cpu_config(model), endpoint), name_prefix=LLM_PREFIX)
    assert model.preset is not None  # the config requires one on GPUs
    p = PRESETS[model.preset]
    if model.max_model_len:
        p = dataclasses.replace(p, max_model_len=model.max_model_len)
    overrides: dict[str, Any] = {
        "model_loading_config": {
            "model_id": model.served_name,
            "model_source": model.model_source or p.model_source,
        },
        "placement_group_config": {
            "strategy": p.strategy,
            "bundle_per_worker": {"GPU": 1, str(model.resource): 1},
        },
        "deployment_config": _serving(model, p),
    }
    bind: dict[str, Any] = {}
    if model.engine == "scripted":
        from deploy.scripted_llm import LATENCY_KEY, ScriptedLLMEngine  # noqa: PLC0415

        overrides["experimental_configs"] = {
            LATENCY_KEY: model.scripted_latency.model_dump(),
            TELEMETRY_KEY: dict(telemetry or {}),
        }
        bind["engine_cls"] = ScriptedLLMEngine
        config = llm_config(p, **overrides)
    else:
        config = _vllm_traced(llm_config(p, **overrides), endpoint)
    return build_llm_deployment(config, name_prefix=LLM_PREFIX, bind_kwargs=bind)


def _vllm_traced(config: Any, endpoint: str | None) -> Any:
    """``config`` with vLLM's request spans (``llm_request``, in the caller's trace) sent to ``endpoint``."""
    if endpoint:
        config.engine_kwargs = {**config.engine_kwargs, "otlp_traces_endpoint": endpoint}
    return config


def cpu_config(model: ModelConfig) -> Any:
    """The LLMConfig of a CPU model: vLLM's CPU backend on the model directory (a GGUF file is converted
    once, here, where the application is built), with the preset's knobs when one is named."""
    directory = str(model_directory(model.model_source))
    if model.preset:
        p = dataclasses.replace(PRESETS[model.preset], name=model.served_name, model_source=directory)
        p = dataclasses.replace(p, tensor_parallel_size=model.tensor_parallel_size, pipeline_parallel_size=1)
    else:
        p = cpu_preset(model.served_name, directory, tensor_parallel_size=model.tensor_parallel_size)
    if model.max_model_len:
        p = dataclasses.replace(p, max_model_len=model.max_model_len)
    layout = CpuLayout(model.tensor_parallel_size, model.kv_cache_gib, model.resource)
    return cpu_llm_config(p, layout, deployment_config=_serving(model, p))


def _serving(model: ModelConfig, p: Preset) -> dict[str, Any]:
    serving = deployment_config(p)
    serving["autoscaling_config"] |= {"min_replicas": model.replicas.min, "max_replicas": model.replicas.max}
    serving["max_ongoing_requests"] = model.max_ongoing_requests
    return serving


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """The whole service as one Ray Serve application, from the ``args`` document."""
    config = load_config(dict(args or {}), source="serve args")
    llms = {model.served_name: llm_deployment(model, _telemetry(config)) for model in config.models}
    workers = config.tool_workers
    # Calls past max_concurrent_calls wait in the replica, in order (the executor's slots), not in Serve's
    # router: a router whose replicas are full retries two requests at a time with backoff (up to 0.5 s),
    # which left a burst of 200 calls idle for seconds (bench/service.py: 10 calls/s, not 90).
    tools = ToolWorkers.options(
        **_pinned(
            workers.ray_resource,
            max_ongoing_requests=_QUEUED_CALLS,
            autoscaling_config=_scaling(workers.replicas.min, workers.replicas.max),
        )
    ).bind(workers.tools, workers.spare_hosts, workers.max_concurrent_calls, _telemetry(config))
    # A queue consumer serves no requests for Serve to count: it scales on the queue's depth instead.
    with warnings.catch_warnings():
        # Ray 2.60 calls metrics_interval_s deprecated in favour of environment variables it does not
        # read yet: the field is still what sets how often replicas report their metrics.
        warnings.filterwarnings("ignore", "The `metrics_interval_s` field", DeprecationWarning)
        orchestrator = Orchestrator.options(
            **_pinned(config.orchestrator.ray_resource, autoscaling_config=_queue_scaling(config))
        ).bind(config.model_dump(mode="json"), llms, tools)
    # The API is async and holds event streams open for as long as clients watch: Serve's default of five
    # requests at a time per replica would let five watchers block everyone else.
    return Api.options(**_pinned(config.api.ray_resource, 1, max_ongoing_requests=1000)).bind(
        config.model_dump(mode="json"), orchestrator, tools, llms
    )


_QUEUED_CALLS = 1000  # calls one tool-worker replica accepts, running or waiting for a slot


def _queue_scaling(config: ServiceConfig) -> dict[str, Any]:
    """The orchestrators' autoscaling: ``deploy.autoscale.QueueDepthPolicy`` on the metrics each replica
    reports (``_Orchestrator.record_autoscaling_stats``)."""
    orchestrator = config.orchestrator
    return {
        "min_replicas": max(1, orchestrator.replicas.min),
        "max_replicas": orchestrator.replicas.max,
        "metrics_interval_s": orchestrator.metrics_interval_s,
        "look_back_period_s": 2 * orchestrator.metrics_interval_s,
        "upscale_delay_s": orchestrator.upscale_delay_s,
        "downscale_delay_s": orchestrator.downscale_delay_s,
        "policy": {
            "policy_function": "deploy.autoscale:QueueDepthPolicy",
            "policy_kwargs": {"runs_per_replica": orchestrator.runs_per_replica},
        },
    }


def _scaling(low: int, high: int) -> dict[str, Any]:
    return {
        "min_replicas": max(1, low),
        "max_replicas": high,
        "target_ongoing_requests": 4,
        "upscale_delay_s": 5,
        "downscale_delay_s": 300,
    }
