"""Telemetry end to end: a process configured like a service replica exports its spans and metrics over
OTLP/gRPC to a real receiver (rotel), which logs what it received."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN = """
import asyncio
from orchestrator import tracing
shutdown = tracing.configure(service_name="caduceus-e2e", otlp_endpoint="http://127.0.0.1:{port}")
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.submodule_search_locations, "the rotel wheel is a test dependency"
    agent = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    grpc, http, log = _free_port(), _free_port(), tmp_path / "received.txt"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(agent),
                "start",
                "--exporter",
                "blackhole",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http}",
                "--debug-log",
                "traces",
                "--debug-log",
                "metrics",
                "--debug-log-verbosity",
                "detailed",
                "--log-file",
                str(tmp_path / "agent.log"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(log, ["Starting Rotel"], 30)
        yield grpc, log
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(log: Path, needles: list[str] | tuple[str, ...], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = log.read_text(errors="replace")
        if all(needle in text for needle in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def test_spans_and_metrics_reach_a_real_otlp_receiver(receiver: tuple[int, Path]) -> None:
    port, log = receiver
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(port=port)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "answer"
    received = _wait_for(log, EXPECTED, 30)
    assert [needle for needle in EXPECTED if needle not in received] == []
