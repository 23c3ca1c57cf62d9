"""The span tree of a run, per the OpenTelemetry GenAI conventions, and one trace across a resume."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.runs import first_checkpoint, new_run, user_turn
from orchestrator.tracing import Tracing, new_carrier, trace_id
from orchestrator.tracing import carrier as carrier_now
from toolbox.protocol import ToolSpec

ADD = ToolSpec("add", "Add.", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider), exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_span_tree_of_a_run() -> None:
    tracing, exporter = traced()
    spec = new_run(tenant="t", thread_id="conv-1", tools=[ADD])
    ckpt = first_checkpoint(spec, [user_turn("add")])
    agent = Agent(
        ScriptedEngine([CALL, "2"]),
        FunctionExecutor({"add": lambda a: a + 1}),
        MemoryStore(),
        tracing=tracing,
    )
    asyncio.run(agent.run(spec, ckpt))
    spans = exporter.get_finished_spans()
    (root,) = by_name(spans, "invoke_agent caduceus")
    chats = by_name(spans, "chat scripted-hermes")
    (tool,) = by_name(spans, "execute_tool add")
    assert len(spans) == 4 and len(chats) == 2
    assert root.parent is not None and root.parent.is_remote  # the run's own trace context, from its record
    assert all(chat.parent is not None and chat.parent.span_id == root.context.span_id for chat in chats)
    assert tool.parent is not None and tool.parent.span_id == chats[0].context.span_id
    assert {span.context.trace_id for span in spans} == {root.context.trace_id}
    assert ckpt.trace["traceparent"].split("-")[1] == f"{root.context.trace_id:032x}"
    assert all(span.attributes and span.attributes["gen_ai.conversation.id"] == "conv-1" for span in spans)
    assert root.attributes and root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["caduceus.run.stop_reason"] == "answer"
    chat = chats[0].attributes or {}
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.request.model"] == "scripted-hermes"
    assert chat["gen_ai.usage.output_tokens"] > 0 and chat["gen_ai.usage.input_tokens"] > 0
    assert chat["gen_ai.response.finish_reasons"] == ("stop",)
    attributes = tool.attributes or {}
    assert attributes["gen_ai.tool.name"] == "add" and attributes["gen_ai.tool.call.id"] == "call_0_0"
    assert attributes["gen_ai.operation.name"] == "execute_tool"


class Crash(BaseException):
    pass


def test_a_resumed_run_continues_the_same_trace() -> None:
    tracing, exporter = traced()
    spec = new_run(tenant="t", thread_id="conv-2", tools=[ADD])
    ckpt = first_checkpoint(spec, [user_turn("add")])
    store = MemoryStore()

    def crash(a: int) -> Any:
        raise Crash

    with pytest.raises(Crash):
        asyncio.run(
            Agent(ScriptedEngine([CALL]), FunctionExecutor({"add": crash}), store, tracing=tracing).run(
                spec, ckpt
            )
        )
    resumed = first_checkpoint(spec, [user_turn("add")])
    resumed.trace = json.loads(json.dumps(ckpt.trace))  # as read back from the run record
    asyncio.run(
        Agent(ScriptedEngine(["done"]), FunctionExecutor({}), store, tracing=tracing).run(spec, resumed)
    )
    roots = by_name(exporter.get_finished_spans(), "invoke_agent caduceus")
    assert len(roots) == 2 and roots[0].context.trace_id == roots[1].context.trace_id


def test_a_run_submitted_in_a_request_span_is_that_requests_trace_down_to_the_deployments() -> None:
    tracing, exporter = traced()
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with tracing.request("POST", "/v1/runs", "/v1/runs", incoming):
        carrier = new_carrier()
    assert trace_id(carrier) == "0af7651916cd43dd8448eb211c80319c"
    tracing.queued("run_1", "conv-3", carrier, time.time() - 0.25)
    with tracing.agent("run_1", "conv-3", carrier), tracing.tool("add", "call_0_0", "conv-3"):
        sent = carrier_now()
    with tracing.served("sandbox add", sent, {"gen_ai.tool.name": "add"}, current=False):
        pass
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "POST /v1/runs",
        "queue_wait",
        "invoke_agent caduceus",
        "execute_tool add",
        "sandbox add",
    }
    assert {span.context.trace_id for span in spans.values()} == {0x0AF7651916CD43DD8448EB211C80319C}
    request = spans["POST /v1/runs"]
    assert request.parent is not None and request.parent.span_id == 0xB7AD6B7169203331  # the caller's
    for child in ("queue_wait", "invoke_agent caduceus"):
        assert spans[child].parent is not None and spans[child].parent.span_id == request.context.span_id
    wait = spans["queue_wait"]
    assert wait.end_time is not None and wait.start_time is not None
    assert 0.2 < (wait.end_time - wait.start_time) / 1e9 < 5
    sandbox = spans["sandbox add"]
    assert sandbox.parent is not None and sandbox.parent.span_id == spans["execute_tool add"].context.span_id
    assert trace_id({}) is None
