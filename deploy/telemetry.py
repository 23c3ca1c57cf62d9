"""Each replica's telemetry: where its spans and metrics go (``orchestrator.tracing``), and, for the tool
workers, the spans and metrics of their side of a call.

Every deployment of the application (the API, the orchestrators, the tool workers, a scripted LLM
replica) calls ``start`` once, with the service's ``otlp_endpoint`` and ``telemetry`` settings: spans and
metrics go to the endpoint over OTLP (on a cluster, the chart's collector, which forwards the spans to the
tracing backend and serves the metrics to Prometheus). With ``telemetry.prometheus_targets`` each replica
also serves its metrics on a free loopback port and writes a Prometheus ``file_sd_configs`` file naming it
(``{component}-{pid}.json``), removed when the replica stops: on one machine, Prometheus finds every
replica there. vLLM's own spans (``llm_request``) come from vLLM, given the same endpoint
(``otlp_traces_endpoint``); its metrics reach Prometheus through Ray's metrics agent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.config import TelemetryConfig
from orchestrator import tracing
from orchestrator.tracing import SandboxGauges, Tracing
from orchestrator.tracing.names import SANDBOX_COLD, SANDBOX_SPAN, TOOL_CALL_ID, TOOL_NAME
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.sandbox.pool import PooledSandbox

#: What a deployment that gets no ``ServiceConfig`` is given of it (``settings``): the endpoint and the
#: telemetry settings, as JSON.
TELEMETRY_KEY = "caduceus_telemetry"


@dataclass
class Telemetry:
    """A replica's telemetry, started; ``close`` flushes it and removes its target file."""

    shutdown: Callable[[], None]
    target: Path | None = None
    stop_serving: Callable[[], None] | None = None

    def close(self) -> None:
        if self.target is not None:
            self.target.unlink(missing_ok=True)
        if self.stop_serving is not None:
            self.stop_serving()
        self.shutdown()


def settings(otlp_endpoint: str | None, telemetry: TelemetryConfig) -> dict[str, Any]:
    """The telemetry part of the service's configuration, for deployments that take no ``ServiceConfig``."""
    return {"otlp_endpoint": otlp_endpoint, **telemetry.model_dump(mode="json")}


def start(component: str, given: Mapping[str, Any] | None) -> Telemetry | None:
    """Start this process's telemetry as ``settings`` describe it (``None``: none configured)."""
    if not given:
        return None
    config = TelemetryConfig.model_validate({k: v for k, v in given.items() if k != "otlp_endpoint"})
    endpoint = given.get("otlp_endpoint")
    directory = config.prometheus_targets
    if not endpoint and not directory:
        return None
    shutdown = tracing.configure(
        service_name=f"caduceus-{component}",
        otlp_endpoint=endpoint,
        prometheus=directory is not None,
        export_interval_s=config.export_interval_s,
    )
    if directory is None:
        return Telemetry(shutdown)
    stop, port = tracing.serve_metrics("127.0.0.1", 0)
    target = Path(directory) / f"{component}-{os.getpid()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    entry = [{"targets": [f"127.0.0.1:{port}"], "labels": {"component": component}}]
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(entry), encoding="utf-8")
    partial.replace(target)  # Prometheus never reads half a file
    return Telemetry(shutdown, target, stop)


class ToolTelemetry:
    """The tool workers' side of each call: a ``sandbox {name}`` span continuing the caller's trace, and
    the sandbox pool's gauges (the processes it keeps standing; calls that found none and waited for one to
    start: cold starts)."""

    def __init__(self, executor: Executor, sandbox: PooledSandbox) -> None:
        self._executor, self._sandbox = executor, sandbox
        self._tracing = Tracing()
        self._gauges = SandboxGauges(lambda: len(sandbox.standing()))

    def _sandboxed(self, call: ToolCall) -> bool:
        entry = self._executor.registry.get(call.name)
        return entry is not None and entry.remote is None and entry.isolation != "trusted"

    async def execute(
        self, call: ToolCall, conversation: str, carrier: Mapping[str, str] | None
    ) -> ToolResult:
        cold = self._sandboxed(call) and not self._sandbox.standing()
        if cold:
            self._gauges.cold_start()
        attributes = {TOOL_NAME: call.name, TOOL_CALL_ID: call.id, SANDBOX_COLD: cold}
        with self._tracing.served(f"{SANDBOX_SPAN} {call.name}", carrier, attributes) as span:
            result = await self._executor.execute(call, conversation)
            if result.error is not None:
                tracing.record_error(span, result.error.type)
            return result
