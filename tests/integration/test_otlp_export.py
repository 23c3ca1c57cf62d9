"""Telemetry end to end: a process configured like a service replica exports its spans and metrics over
OTLP/gRPC to a real receiver (rotel), which logs what it received."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.otlp_receiver import Receiver, rotel, wait_for

RUN = """
import asyncio
from orchestrator import tracing
shutdown = tracing.configure(service_name="caduceus-e2e", otlp_endpoint="{endpoint}")
from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.runs import first_checkpoint, new_run, user_turn
from toolbox.protocol import ToolSpec
ADD = ToolSpec("add", "Add.", {{"type": "object", "properties": {{"a": {{"type": "integer"}}}}}})
CALL = '<tool_call>\\n{{"name": "add", "arguments": {{"a": 2}}}}\\n</tool_call>'
spec = new_run(tenant="t1", thread_id="thread-e2e", tools=[ADD])
agent = Agent(ScriptedEngine([CALL, "Done."]), FunctionExecutor({{"add": lambda a: a}}), MemoryStore())
print(asyncio.run(agent.run(spec, first_checkpoint(spec, [user_turn("go")]))).stop_reason)
shutdown()
"""

EXPECTED = (
    "invoke_agent caduceus",
    "chat scripted-hermes",
    "execute_tool add",
    "thread-e2e",
    "caduceus-e2e",
    "caduceus.runs",
    "gen_ai.client.operation.duration",
    "gen_ai.client.token.usage",
    "caduceus.tool.calls",
)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with rotel(tmp_path, "traces", "metrics") as started:
        yield started


def test_spans_and_metrics_reach_a_real_otlp_receiver(receiver: Receiver) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(endpoint=receiver.endpoint)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "answer"
    received = wait_for(receiver.log, EXPECTED, 30)
    assert [needle for needle in EXPECTED if needle not in received] == []
