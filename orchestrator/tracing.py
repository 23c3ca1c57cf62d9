"""Tracing: the only module that imports OpenTelemetry.

Spans follow the OpenTelemetry GenAI semantic conventions: ``invoke_agent`` for a run, ``chat {model}`` for
each model call (token usage, finish reason), ``execute_tool {name}`` for each tool call, and
``gen_ai.conversation.id`` on all of them. The run's trace context is carried in its record
(``carrier()``), so that a run resumed by another worker continues the same trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
        with self._tracer.start_as_current_span(
            "invoke_agent caduceus", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            yield span

    @contextmanager
    def chat(self, model: str, conversation: str, max_tokens: int) -> Iterator[Span]:
        attributes: dict[str, Any] = {
            OPERATION: "chat",
            REQUEST_MODEL: model,
            CONVERSATION: conversation,
            REQUEST_MAX_TOKENS: max_tokens,
        }
        with self._tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield span

    @contextmanager
    def tool(self, name: str, call_id: str, conversation: str) -> Iterator[Span]:
        attributes = {
            OPERATION: "execute_tool",
            TOOL_NAME: name,
            TOOL_CALL_ID: call_id,
            TOOL_TYPE: "function",
            CONVERSATION: conversation,
        }
        with self._tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
            yield span


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
    span.set_attribute(INPUT_TOKENS, input_tokens)
    span.set_attribute(OUTPUT_TOKENS, output_tokens)
    if finish_reason:
        span.set_attribute(FINISH_REASONS, [finish_reason])


def record_error(span: Span, error_type: str) -> None:
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR))


def record_stop(span: Span, reason: str) -> None:
    span.set_attribute(STOP_REASON, reason)
