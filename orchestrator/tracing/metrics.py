"""The service's metric instruments and the functions that record them (``orchestrator.tracing`` lists the
metrics as Prometheus sees them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from orchestrator.records import finished_status
from orchestrator.tracing.names import (
    ERROR_TYPE,
    OPERATION,
    OPERATION_DURATION,
    REQUEST_MODEL,
    STOP_REASON,
    TENANT,
    TOKEN_TYPE,
    TOKEN_USAGE,
    TOOL_NAME,
)

_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _seconds(meter: metrics.Meter, name: str, description: str) -> metrics.Histogram:
    return meter.create_histogram(
        name, unit="s", description=description, explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS
    )


class _Instruments:
    """The service's metric instruments, created once from the global meter provider (whatever it is
    when they are first used: the API's proxies forward to a provider configured later)."""

    def __init__(self) -> None:
        meter = metrics.get_meter("caduceus.orchestrator")
        self.duration = _seconds(meter, OPERATION_DURATION, "GenAI operation duration")
        self.tokens = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per model call",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.tenant_tokens = meter.create_counter(
            "caduceus.tokens", unit="{token}", description="Tokens used, by tenant, model and type"
        )
        self.runs = meter.create_counter("caduceus.runs", unit="{run}", description="Runs ended")
        self.in_progress = meter.create_up_down_counter("caduceus.runs.in_progress", unit="{run}")
        self.steps = meter.create_histogram(
            "caduceus.run.steps",
            unit="{step}",
            description="Steps per ended run",
            explicit_bucket_boundaries_advisory=_STEP_BUCKETS,
        )
        self.step_duration = _seconds(meter, "caduceus.step.duration", "Step latency: model and tools")
        self.tool_calls = meter.create_counter("caduceus.tool.calls", unit="{call}", description="Tool calls")
        self.tool_duration = _seconds(meter, "caduceus.tool.duration", "Tool call latency")
        self.queue_depth = meter.create_gauge(
            "caduceus.queue.depth", unit="{run}", description="Runs queued or running"
        )
        self.queue_wait = _seconds(meter, "caduceus.queue.wait", "Time a new run waited in the queue")
        self.takeovers = meter.create_counter(
            "caduceus.lease.takeovers", unit="{run}", description="Runs resumed by another worker"
        )
        # A counter is exported once it has a value: these start at zero, so that "none yet" is data.
        self.takeovers.add(0)


_instruments: _Instruments | None = None


def meters() -> _Instruments:
    global _instruments  # noqa: PLW0603 - one set of instruments per process, made on first use
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


@dataclass
class Measure:
    """What a chat or tool span learns while it is open (usage, an error) for the metrics at its end."""

    attributes: dict[str, Any]
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    tenant: str = ""


def record_chat(measure: Measure, seconds: float) -> None:
    m = meters()
    attributes = dict(measure.attributes)
    if measure.error:
        attributes[ERROR_TYPE] = measure.error
    m.duration.record(seconds, attributes)
    model = {REQUEST_MODEL: measure.attributes[REQUEST_MODEL], OPERATION: "chat"}
    for kind, count in (("input", measure.input_tokens), ("output", measure.output_tokens)):
        if count is not None:
            m.tokens.record(count, {**model, TOKEN_TYPE: kind})
            owner = {TENANT: measure.tenant, REQUEST_MODEL: model[REQUEST_MODEL], TOKEN_TYPE: kind}
            m.tenant_tokens.add(count, owner)


def record_tool(measure: Measure, seconds: float) -> None:
    m = meters()
    attributes = {**measure.attributes, "outcome": measure.error or "ok"}
    m.tool_calls.add(1, attributes)
    m.tool_duration.record(seconds, attributes)


def record_tool_refused(name: str, error_type: str) -> None:
    """A call that never ran (malformed, invalid arguments, denied by a limit): counted, not timed."""
    meters().tool_calls.add(1, {TOOL_NAME: name, "outcome": error_type})


def record_step(model: str, seconds: float) -> None:
    """A step was committed: its model call and the tool calls still running after it, in seconds."""
    meters().step_duration.record(seconds, {REQUEST_MODEL: model})


def record_run_end(stop_reason: str, steps: int) -> None:
    """A run ended (answered, stopped by a limit, or cancelled): counted by status and stop reason."""
    m = meters()
    m.runs.add(1, {"status": finished_status(stop_reason), STOP_REASON: stop_reason})
    m.steps.record(steps)


def record_run_failed() -> None:
    """A run failed through our fault or the infrastructure's (not the model's)."""
    meters().runs.add(1, {"status": "failed", STOP_REASON: "error"})


def record_queue_depth(depth: int) -> None:
    meters().queue_depth.set(depth)


def record_queue_wait(seconds: float) -> None:
    meters().queue_wait.record(max(0.0, seconds))


def record_takeover() -> None:
    meters().takeovers.add(1)


class SandboxGauges:
    """The tool workers' sandbox pool, as the deployment that holds it reports it: how many processes
    it keeps standing between calls (``size``, read at every collection) and its cold starts."""

    def __init__(self, size: Callable[[], int]) -> None:
        meter = metrics.get_meter("caduceus.tools")
        self._size = size
        meter.create_observable_gauge(
            "caduceus.sandbox.standing",
            callbacks=[self._observe],
            unit="{process}",
            description="Sandbox processes kept ready between calls (templates and spare hosts)",
        )
        self._cold = meter.create_counter(
            "caduceus.sandbox.cold_starts",
            unit="{call}",
            description="Tool calls that found no sandbox process standing and waited for one to start",
        )
        self._cold.add(0)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._size())]

    def cold_start(self) -> None:
        self._cold.add(1)
