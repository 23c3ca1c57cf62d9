"""The real demo path: SmolLM2-135M through ``LocalEngine``, the agent loop, a real embedded Redis and the
workers' sandboxed tools, for a constrained two-tool run. Greedy decoding makes it deterministic; the
grammar makes every call valid."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deploy import agent_demo
from deploy.demo_tools import demo_registry, narrowed
from orchestrator.engines import LocalEngine
from orchestrator.local_model import LocalModel
from toolbox.hermes import validate

pytestmark = pytest.mark.integration


def test_a_two_step_tool_run_with_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADUCEUS_SCRATCH_ROOT", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)  # the demo starts and stops its own redis-server
    printed: list[str] = []
    result = asyncio.run(agent_demo.run_demo(LocalEngine(LocalModel()), printed.append))

    assert result.outcome.stop_reason == "answer" and result.outcome.steps == 3
    (compute,), (store,) = result.steps[0].calls, result.steps[1].calls
    assert result.steps[2].calls == []
    assert (compute[0].name, compute[0].arguments, compute[1].content) == (
        "calculator",
        {"expression": "17 * 23"},
        391,
    )
    call, stored = store
    assert (call.name, call.arguments, stored.ok) == (
        "files",
        {"action": "write", "path": "result.txt", "content": "391"},
        True,
    )
    offered = [narrowed(spec) for spec in demo_registry().specs()]
    assert validate(compute[0], offered) is None and validate(call, offered) is None
    # The file is in the conversation's scratch directory, written by the sandboxed tool.
    assert result.scratch.parent == tmp_path
    assert (result.scratch / call.arguments["path"]).read_text() == call.arguments["content"]
    transcript = "".join(printed)
    assert (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call>'
        in transcript
    )
    assert 'ran calculator in its sandbox -> {"name": "calculator", "content": 391}' in transcript
    lines = agent_demo.summary(result)
    assert "verdict: the model stored the calculator's result (391)" in lines
    assert "stop reason: answer; 3 steps" in lines[0]
