"""Tracing and metrics: the only module that imports OpenTelemetry.

Spans follow the OpenTelemetry GenAI semantic conventions: ``invoke_agent`` for a run, ``chat {model}`` for
each model call (token usage, finish reason), ``execute_tool {name}`` for each tool call, and
``gen_ai.conversation.id`` on all of them. The run's trace context is carried in its record
(``carrier()``), so that a run resumed by another worker continues the same trace.

Metrics are recorded by the same context managers, so instrumenting the loop needs no extra call sites.
Names follow the GenAI conventions where they exist; the rest are ``caduceus.*``. As Prometheus sees them
(through the collector's ``prometheus`` exporter, or ``configure(prometheus_port=...)`` locally):

    gen_ai.client.operation.duration  histogram s     gen_ai_client_operation_duration_seconds
        (gen_ai.operation.name = chat | invoke_agent, gen_ai.request.model, error.type)
    gen_ai.client.token.usage         histogram       gen_ai_client_token_usage
        (gen_ai.token.type = input | output, gen_ai.request.model)
    caduceus.runs                     counter         caduceus_runs_total  (status, stop_reason)
    caduceus.runs.in_progress         up-down         caduceus_runs_in_progress
    caduceus.run.steps                histogram       caduceus_run_steps  (steps per finished run)
    caduceus.tool.calls               counter         caduceus_tool_calls_total  (gen_ai.tool.name, outcome)
    caduceus.tool.duration            histogram s     caduceus_tool_duration_seconds  (same attributes)
    caduceus.queue.depth              gauge           caduceus_queue_depth  (runs queued or running)
    caduceus.lease.takeovers          counter         caduceus_lease_takeovers_total

``outcome`` is ``ok`` or the ``ToolError`` type; a run's ``status`` is ``completed`` (it answered),
``cancelled``, ``incomplete`` (a limit stopped it) or ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orchestrator.records import finished_status

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
CONVERSATION = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
ERROR_TYPE = "error.type"
RUN_ID = "caduceus.run.id"
STOP_REASON = "caduceus.run.stop_reason"

_PROPAGATOR = TraceContextTextMapPropagator()

OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TOKEN_TYPE = "gen_ai.token.type"
_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Instruments:
    """The service's metric instruments, created once from the global meter provider (whatever it is
    when they are first used: the API's proxies forward to a provider configured later)."""

    def __init__(self) -> None:
        meter = metrics.get_meter("caduceus.orchestrator")
        self.duration = meter.create_histogram(
            OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            TOKEN_USAGE,
            unit="{token}",
            description="Tokens used per model call",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.runs = meter.create_counter("caduceus.runs", unit="{run}", description="Runs ended")
        self.in_progress = meter.create_up_down_counter("caduceus.runs.in_progress", unit="{run}")
        self.steps = meter.create_histogram(
            "caduceus.run.steps",
            unit="{step}",
            description="Steps per ended run",
            explicit_bucket_boundaries_advisory=_STEP_BUCKETS,
        )
        self.tool_calls = meter.create_counter("caduceus.tool.calls", unit="{call}", description="Tool calls")
        self.tool_duration = meter.create_histogram(
            "caduceus.tool.duration",
            unit="s",
            description="Tool call latency",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.queue_depth = meter.create_gauge(
            "caduceus.queue.depth", unit="{run}", description="Runs queued or running"
        )
        self.takeovers = meter.create_counter(
            "caduceus.lease.takeovers", unit="{run}", description="Runs resumed by another worker"
        )


_instruments: _Instruments | None = None


def _meters() -> _Instruments:
    global _instruments  # noqa: PLW0603 - one set of instruments per process, made on first use
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


@dataclass
class _Measure:
    """What a chat or tool span learns while it is open (usage, an error) for the metrics at its end."""

    attributes: dict[str, Any]
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None


_CURRENT: ContextVar[_Measure | None] = ContextVar("caduceus_measure", default=None)


@contextmanager
def _measured(attributes: dict[str, Any]) -> Iterator[_Measure]:
    measure = _Measure(attributes)
    token = _CURRENT.set(measure)
    try:
        yield measure
    except BaseException as exc:
        measure.error = measure.error or type(exc).__name__
        raise
    finally:
        _CURRENT.reset(token)


class Tracing:
    """One context manager per span kind. ``provider=None`` uses the global tracer provider."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("caduceus.orchestrator", tracer_provider=provider)

    @contextmanager
    def agent(self, run_id: str, conversation: str, carrier: dict[str, str]) -> Iterator[Span]:
        """The run's span. A non-empty ``carrier`` (from an earlier attempt) makes it join that trace."""
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        attributes = {
            OPERATION: "invoke_agent",
            AGENT_NAME: "caduceus",
            CONVERSATION: conversation,
            RUN_ID: run_id,
        }
        meters = _meters()
        meters.in_progress.add(1)
        try:
            with self._tracer.start_as_current_span(
                "invoke_agent caduceus", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
            ) as span:
                yield span
        finally:
            meters.in_progress.add(-1)

    @contextmanager
    def chat(self, model: str, conversation: str, max_tokens: int) -> Iterator[Span]:
        attributes: dict[str, Any] = {
            OPERATION: "chat",
            REQUEST_MODEL: model,
            CONVERSATION: conversation,
            REQUEST_MAX_TOKENS: max_tokens,
        }
        start = time.monotonic()
        with (
            _measured({OPERATION: "chat", REQUEST_MODEL: model}) as measure,
            self._tracer.start_as_current_span(
                f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
            ) as span,
        ):
            try:
                yield span
            finally:
                _record_chat(measure, time.monotonic() - start)

    @contextmanager
    def tool(self, name: str, call_id: str, conversation: str) -> Iterator[Span]:
        attributes = {
            OPERATION: "execute_tool",
            TOOL_NAME: name,
            TOOL_CALL_ID: call_id,
            TOOL_TYPE: "function",
            CONVERSATION: conversation,
        }
        start = time.monotonic()
        with (
            _measured({TOOL_NAME: name}) as measure,
            self._tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span,
        ):
            try:
                yield span
            finally:
                _record_tool(measure, time.monotonic() - start)


def _record_chat(measure: _Measure, seconds: float) -> None:
    meters = _meters()
    attributes = dict(measure.attributes)
    if measure.error:
        attributes[ERROR_TYPE] = measure.error
    meters.duration.record(seconds, attributes)
    model = {REQUEST_MODEL: measure.attributes[REQUEST_MODEL], OPERATION: "chat"}
    if measure.input_tokens is not None:
        meters.tokens.record(measure.input_tokens, {**model, TOKEN_TYPE: "input"})
    if measure.output_tokens is not None:
        meters.tokens.record(measure.output_tokens, {**model, TOKEN_TYPE: "output"})


def _record_tool(measure: _Measure, seconds: float) -> None:
    meters = _meters()
    attributes = {**measure.attributes, "outcome": measure.error or "ok"}
    meters.tool_calls.add(1, attributes)
    meters.tool_duration.record(seconds, attributes)


def record_tool_refused(name: str, error_type: str) -> None:
    """A call that never ran (malformed, invalid arguments, denied by a limit): counted, not timed."""
    _meters().tool_calls.add(1, {TOOL_NAME: name, "outcome": error_type})


def record_run_end(stop_reason: str, steps: int) -> None:
    """A run ended (answered, stopped by a limit, or cancelled): counted by status and stop reason."""
    status = finished_status(stop_reason)
    meters = _meters()
    meters.runs.add(1, {"status": status, STOP_REASON: stop_reason})
    meters.steps.record(steps)


def record_run_failed() -> None:
    """A run failed through our fault or the infrastructure's (not the model's)."""
    _meters().runs.add(1, {"status": "failed", STOP_REASON: "error"})


def record_queue_depth(depth: int) -> None:
    _meters().queue_depth.set(depth)


def record_takeover() -> None:
    _meters().takeovers.add(1)


def carrier() -> dict[str, str]:
    """The current trace context as W3C ``traceparent``/``tracestate`` strings, for the run record."""
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out)
    return out


def new_carrier() -> dict[str, str]:
    """A trace context for a new run: the caller's current span's, or a fresh trace of its own, so that
    every attempt at the run (first and resumed) is part of one trace."""
    current = carrier()
    if current:
        return current
    ids = RandomIdGenerator()
    context = SpanContext(
        ids.generate_trace_id(), ids.generate_span_id(), is_remote=True, trace_flags=TraceFlags(1)
    )
    out: dict[str, str] = {}
    _PROPAGATOR.inject(out, trace.set_span_in_context(NonRecordingSpan(context)))
    return out


def record_usage(span: Span, input_tokens: int, output_tokens: int, finish_reason: str | None) -> None:
    measure = _CURRENT.get()
    if measure is not None:
        measure.input_tokens, measure.output_tokens = input_tokens, output_tokens
    span.set_attribute(INPUT_TOKENS, input_tokens)
    span.set_attribute(OUTPUT_TOKENS, output_tokens)
    if finish_reason:
        span.set_attribute(FINISH_REASONS, [finish_reason])


def record_error(span: Span, error_type: str) -> None:
    measure = _CURRENT.get()
    if measure is not None:
        measure.error = error_type
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR))


def record_stop(span: Span, reason: str) -> None:
    span.set_attribute(STOP_REASON, reason)


def configure(
    *,
    service_name: str = "caduceus",
    otlp_endpoint: str | None = None,
    prometheus: bool = False,
    export_interval_s: float = 15.0,
) -> Callable[[], None]:
    """Install this process's tracer and meter providers; returns their shutdown.

    With ``otlp_endpoint`` (the chart wires the collector's gRPC port), spans and metrics go there over
    OTLP; the collector exposes the metrics to Prometheus. With ``prometheus`` the metrics are also
    registered in ``prometheus_client``'s default registry, for a local ``/metrics`` endpoint.
    """
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create({"service.name": service_name})
    readers: list[MetricReader] = []
    tracer_provider = SdkTracerProvider(resource=resource)
    if otlp_endpoint:
        exporter = OTLPMetricExporter(endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://"))
        readers.append(
            PeriodicExportingMetricReader(exporter, export_interval_millis=export_interval_s * 1000)
        )
        span_exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=otlp_endpoint.startswith("http://"))
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    if prometheus:
        readers.append(PrometheusMetricReader())
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    trace.set_tracer_provider(tracer_provider)

    def shutdown() -> None:
        meter_provider.shutdown()
        tracer_provider.shutdown()

    return shutdown
