"""Tracing and metrics: the one package that owns OpenTelemetry (``names``: every attribute, span and metric
name; ``metrics``: the instruments; ``export``: where a process sends them).

One trace per run, across the service's processes. The API's request span (``request``) is the root: the
run's trace context is taken from it at submission and kept in the run's record (``carrier()``), so that
the wait in the queue (``queued``), every attempt at the run (``invoke_agent``, first and resumed, by any
worker), each model call (``chat {model}``) and each tool call (``execute_tool {name}``) join it. The
context travels on in the calls to the deployments: the LLM replica's span (``llm_request``, vLLM's own
name for it) and the tool worker's (``sandbox {name}``) continue it there (``served``). Spans follow the
OpenTelemetry GenAI semantic conventions, with ``gen_ai.conversation.id`` on every run span.

Metrics are recorded by the same context managers, so instrumenting the loop needs no extra call sites.
Names follow the GenAI conventions where they exist; the rest are ``caduceus.*``. As Prometheus sees them
(through the collector's ``prometheus`` exporter, or a replica's own endpoint, ``export.serve_metrics``):

    gen_ai.client.operation.duration  histogram s     gen_ai_client_operation_duration_seconds
        (gen_ai.operation.name = chat | invoke_agent, gen_ai.request.model, error.type)
    gen_ai.client.token.usage         histogram       gen_ai_client_token_usage
        (gen_ai.token.type = input | output, gen_ai.request.model)
    caduceus.tokens                   counter         caduceus_tokens_total
        (caduceus.tenant, gen_ai.request.model, gen_ai.token.type)
    caduceus.runs                     counter         caduceus_runs_total  (status, stop_reason)
    caduceus.runs.in_progress         up-down         caduceus_runs_in_progress
    caduceus.run.steps                histogram       caduceus_run_steps  (steps per finished run)
    caduceus.step.duration            histogram s     caduceus_step_duration_seconds  (gen_ai.request.model)
    caduceus.tool.calls               counter         caduceus_tool_calls_total  (gen_ai.tool.name, outcome)
    caduceus.tool.duration            histogram s     caduceus_tool_duration_seconds  (same attributes)
    caduceus.queue.depth              gauge           caduceus_queue_depth  (runs queued or running)
    caduceus.queue.wait               histogram s     caduceus_queue_wait_seconds  (a new run's wait)
    caduceus.lease.takeovers          counter         caduceus_lease_takeovers_total
    caduceus.sandbox.standing         gauge           caduceus_sandbox_standing  (per tool worker replica)
    caduceus.sandbox.cold_starts      counter         caduceus_sandbox_cold_starts_total

``outcome`` is ``ok`` or the ``ToolError`` type; a run's ``status`` is ``completed`` (it answered),
``cancelled``, ``incomplete`` (a limit stopped it) or ``failed``. vLLM's own metrics (time to first token,
prefix-cache queries and hits, tokens) reach Prometheus through Ray's metrics agent as ``ray_vllm_*``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
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

from orchestrator.tracing.export import configure, serve_metrics
from orchestrator.tracing.metrics import (
    Measure,
    SandboxGauges,
    meters,
    record_chat,
    record_queue_depth,
    record_queue_wait,
    record_run_end,
    record_run_failed,
    record_step,
    record_takeover,
    record_tool,
    record_tool_refused,
)
from orchestrator.tracing.names import (
    AGENT_NAME,
    CONVERSATION,
    ERROR_TYPE,
    FINISH_REASONS,
    HTTP_METHOD,
    HTTP_ROUTE,
    HTTP_STATUS,
    INPUT_TOKENS,
    OPERATION,
    OUTPUT_TOKENS,
    QUEUE_SPAN,
    REQUEST_MAX_TOKENS,
    REQUEST_MODEL,
    RUN_ID,
    STOP_REASON,
    TENANT,
    TOOL_CALL_ID,
    TOOL_NAME,
    TOOL_TYPE,
    URL_PATH,
)

__all__ = [
    "SandboxGauges",
    "Tracing",
    "carrier",
    "configure",
    "new_carrier",
    "record_error",
    "record_queue_depth",
    "record_queue_wait",
    "record_run_end",
    "record_run_failed",
    "record_status",
    "record_step",
    "record_stop",
    "record_takeover",
    "record_tool_refused",
    "record_usage",
    "serve_metrics",
    "trace_id",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_CURRENT: ContextVar[Measure | None] = ContextVar("caduceus_measure", default=None)


@contextmanager
def _measured(attributes: dict[str, Any], tenant: str = "") -> Iterator[Measure]:
    measure = Measure(attributes, tenant=tenant)
    token = _CURRENT.set(measure)
    try:
        yield measure
    except BaseException as exc:
        measure.error = measure.error or type(exc).__name__
        raise
    finally:
        _CURRENT.reset(token)


def _parent(carrier: Mapping[str, str] | None) -> Any:
    return _PROPAGATOR.extract(dict(carrier)) if carrier else None


class Tracing:
    """One context manager per span kind. ``provider=None`` uses the global tracer provider."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("caduceus.orchestrator", tracer_provider=provider)

    @contextmanager
    def request(self, method: str, route: str, path: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """An API request's span (``{method} {route}``), continuing the caller's ``traceparent`` if it
        sent one; a run submitted in it belongs to its trace."""
        attributes = {HTTP_METHOD: method, HTTP_ROUTE: route, URL_PATH: path}
        with self._tracer.start_as_current_span(
            f"{method} {route}", context=_parent(headers), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def queued(self, run_id: str, conversation: str, carrier: Mapping[str, str], since: float) -> None:
        """The wait of a new run in the queue, from ``since`` (epoch seconds, when it was queued) to now:
        a span in the run's trace, and the queue-wait histogram."""
        start, now = int(since * 1e9), time.time_ns()
        span = self._tracer.start_span(
            QUEUE_SPAN,
            context=_parent(carrier),
            kind=SpanKind.CONSUMER,
            attributes={RUN_ID: run_id, CONVERSATION: conversation},
            start_time=min(start, now),
        )
        span.end(end_time=now)
        record_queue_wait((now - start) / 1e9)

    @contextmanager
    def served(
        self,
        name: str,
        carrier: Mapping[str, str] | None,
        attributes: Mapping[str, Any],
        *,
        current: bool = True,
    ) -> Iterator[Span]:
        """A deployment's side of a call made to it with ``carrier`` (the caller's span's context).
        ``current=False`` for a span held open across the yields of a stream: it is then not made the
        current span of whoever iterates the stream."""
        span = self._tracer.start_span(
            name, context=_parent(carrier), kind=SpanKind.SERVER, attributes=dict(attributes)
        )
        if current:
            with trace.use_span(span, end_on_exit=True):
                yield span
            return
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    @contextmanager
    def agent(self, run_id: str, conversation: str, carrier: dict[str, str]) -> Iterator[Span]:
        """The run's span. A non-empty ``carrier`` (from an earlier attempt) makes it join that trace."""
        attributes = {
            OPERATION: "invoke_agent",
            AGENT_NAME: "caduceus",
            CONVERSATION: conversation,
            RUN_ID: run_id,
        }
        instruments = meters()
        instruments.in_progress.add(1)
        try:
            with self._tracer.start_as_current_span(
                "invoke_agent caduceus",
                context=_parent(carrier),
                kind=SpanKind.INTERNAL,
                attributes=attributes,
            ) as span:
                yield span
        finally:
            instruments.in_progress.add(-1)

    @contextmanager
    def chat(self, model: str, conversation: str, max_tokens: int, tenant: str = "") -> Iterator[Span]:
        attributes: dict[str, Any] = {
            OPERATION: "chat",
            REQUEST_MODEL: model,
            CONVERSATION: conversation,
            REQUEST_MAX_TOKENS: max_tokens,
        }
        if tenant:
            attributes[TENANT] = tenant
        start = time.monotonic()
        with (
            _measured({OPERATION: "chat", REQUEST_MODEL: model}, tenant) as measure,
            self._tracer.start_as_current_span(
                f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
            ) as span,
        ):
            try:
                yield span
            finally:
                record_chat(measure, time.monotonic() - start)

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
                record_tool(measure, time.monotonic() - start)


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


def trace_id(carrier: Mapping[str, str]) -> str | None:
    """The trace id (32 hex digits) a run's carrier names, or ``None`` for a carrier without one."""
    context = trace.get_current_span(_PROPAGATOR.extract(dict(carrier))).get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


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


def record_status(span: Span, status: int) -> None:
    span.set_attribute(HTTP_STATUS, status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def record_stop(span: Span, reason: str) -> None:
    span.set_attribute(STOP_REASON, reason)
