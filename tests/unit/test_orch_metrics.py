"""Service metrics: recorded by the loop's spans and tools, scraped as Prometheus text over real HTTP.

The test process gets a MeterProvider with the same Prometheus reader the service can enable (and the
collector's Prometheus exporter follows the same name translation), runs real scripted agent runs, then
serves prometheus_client's registry on a loopback port and scrapes it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from orchestrator import tracing
from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import Limits
from orchestrator.runs import first_checkpoint, new_run, user_turn
from toolbox.protocol import ToolSpec

ADD = ToolSpec(
    "add", "Add.", {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
)
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
BAD = '<tool_call>\n{"name": "add", "arguments": {"a": "x"}}\n</tool_call>'


@pytest.fixture(scope="module")
def scrape() -> Iterator[str]:
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    for outputs, limits in (([CALL, "It is 5."], {}), ([BAD, BAD, BAD], {"max_steps": 2})):
        spec = new_run(tenant="t1", thread_id="th1", tools=[ADD], limits=Limits(**limits))
        agent = Agent(ScriptedEngine(outputs), FunctionExecutor({"add": lambda a, b: a + b}), MemoryStore())
        asyncio.run(agent.run(spec, first_checkpoint(spec, [user_turn("2+3?")])))
    tracing.record_queue_depth(7)
    tracing.record_queue_wait(0.3)
    tracing.record_takeover()
    tracing.SandboxGauges(lambda: 5).cold_start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        with httpx.Client() as client:
            yield client.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{key}="{val}"' in line for key, val in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_runs_by_status_and_stop_reason(scrape: str) -> None:
    assert value(scrape, "caduceus_runs_total", status="completed", caduceus_run_stop_reason="answer") == 1
    assert (
        value(scrape, "caduceus_runs_total", status="incomplete", caduceus_run_stop_reason="max_steps") == 1
    )
    assert value(scrape, "caduceus_runs_in_progress") == 0
    assert value(scrape, "caduceus_run_steps_count") == 2
    assert value(scrape, "caduceus_run_steps_sum") == 4


def test_tool_calls_by_outcome_with_latency(scrape: str) -> None:
    assert value(scrape, "caduceus_tool_calls_total", gen_ai_tool_name="add", outcome="ok") == 1
    assert (
        value(scrape, "caduceus_tool_calls_total", gen_ai_tool_name="add", outcome="invalid_arguments") == 2
    )
    assert (
        value(scrape, "caduceus_tool_duration_seconds_count", gen_ai_tool_name="add") == 1
    )  # refusals never ran
    assert re.search(r'caduceus_tool_duration_seconds_bucket\{.*le="0\.005".*\}', scrape)


def test_genai_operation_duration_and_token_usage(scrape: str) -> None:
    chat = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "scripted-hermes"}
    assert value(scrape, "gen_ai_client_operation_duration_seconds_count", **chat) == 4
    assert value(scrape, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 4
    assert value(scrape, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") > 0


def test_queue_depth_and_lease_takeovers(scrape: str) -> None:
    assert value(scrape, "caduceus_queue_depth") == 7
    assert value(scrape, "caduceus_lease_takeovers_total") == 1
    assert value(scrape, "caduceus_queue_wait_seconds_count") == 1
    assert value(scrape, "caduceus_queue_wait_seconds_sum") == 0.3


def test_tokens_by_tenant_steps_and_the_sandbox_pool(scrape: str) -> None:
    model = {"caduceus_tenant": "t1", "gen_ai_request_model": "scripted-hermes"}
    inputs = value(scrape, "caduceus_tokens_total", gen_ai_token_type="input", **model)
    assert inputs == value(scrape, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") > 0
    assert value(scrape, "caduceus_step_duration_seconds_count", gen_ai_request_model="scripted-hermes") == 4
    assert value(scrape, "caduceus_sandbox_standing") == 5
    assert value(scrape, "caduceus_sandbox_cold_starts_total") == 1


def test_the_dashboard_queries_only_metrics_the_service_exports(scrape: str) -> None:
    dashboard = Path(__file__).resolve().parents[2] / "helm" / "caduceus" / "dashboards" / "caduceus.json"
    exprs = re.findall(r'"expr": "((?:[^"\\]|\\.)*)"', dashboard.read_text(encoding="utf-8"))
    # Metric names only: drop `by (labels)` clauses and `{label="value"}` selectors first.
    bare = [re.sub(r"\{[^}]*\}", "", re.sub(r"by \([^)]*\)", "", expr)) for expr in exprs]
    queried = {name for expr in bare for name in re.findall(r"\b((?:caduceus|gen_ai)_[a-z_]+)", expr)}
    exported = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if not line.startswith("#")}
    assert queried, "the dashboard queries none of the service's metrics"
    assert sorted(queried - exported) == []


def test_configure_installs_a_prometheus_reader_in_a_fresh_process() -> None:
    program = (
        "from prometheus_client import generate_latest\n"
        "from orchestrator.tracing import configure, record_takeover\n"
        "shutdown = configure(service_name='caduceus-test', prometheus=True)\n"
        "record_takeover()\n"
        "print(generate_latest().decode())\n"
        "shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert value(done.stdout, "caduceus_lease_takeovers_total") == 1
