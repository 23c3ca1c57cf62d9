"""OpenAICompletionsEngine against a real HTTP server on loopback that speaks the completions SSE stream."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from deploy.cli import main
from orchestrator.engines import OpenAICompletionsEngine
from orchestrator.errors import EngineError
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import CompletionRequest, Limits
from orchestrator.runs import first_checkpoint, new_run, user_turn
from orchestrator.tracing import Tracing
from toolbox.hermes.constraint import tool_calls
from toolbox.protocol import ToolSpec

pytestmark = pytest.mark.integration
ECHO = ToolSpec(
    "echo", "Echo.", {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
)


class Server(ThreadingHTTPServer):
    outputs: list[str]
    requests: list[tuple[dict[str, str], dict[str, Any]]]
    overflow_above: int


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if self.path != "/v1/completions":
            return self._reply(404, {"error": {"message": "not found"}})
        if len(body["prompt"]) > self.server.overflow_above:
            message = "This model's maximum context length is 100 tokens. However, you requested more."
            return self._reply(400, {"error": {"message": message}})
        text = self.server.outputs.pop(0)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        for start in range(0, len(text), 3):
            self._event({"choices": [{"index": 0, "text": text[start : start + 3], "finish_reason": None}]})
        self._event({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
        self._event({"choices": [], "usage": {"prompt_tokens": 41, "completion_tokens": 7}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _reply(self, status: int, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.outputs, httpd.requests, httpd.overflow_above = [], [], 10**9
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_run_streams_raw_prompts_with_the_session_header(server: Server) -> None:
    server.outputs = ['<tool_call>\n{"name": "echo", "arguments": {"text": "hi"}}\n</tool_call>', "Said hi."]
    spec = new_run(tenant="t", thread_id="thread-7", tools=[ECHO])
    ckpt = first_checkpoint(spec, [user_turn("say hi")])
    store = MemoryStore()

    provider = TracerProvider()

    async def main() -> Any:
        engine = OpenAICompletionsEngine(url(server), "hermes-3-70b")
        agent = Agent(engine, FunctionExecutor({"echo": lambda text: text}), store, tracing=Tracing(provider))
        try:
            return await agent.run(spec, ckpt)
        finally:
            await engine.aclose()

    outcome = asyncio.run(main())
    assert (outcome.stop_reason, outcome.output, outcome.steps) == ("answer", "Said hi.", 2)
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (82, 14)
    (h1, b1), (h2, b2) = server.requests
    assert h1["x-session-id"] == h2["x-session-id"] == "thread-7"
    trace_id = ckpt.trace["traceparent"].split("-")[1]
    assert h1["traceparent"].split("-")[1] == h2["traceparent"].split("-")[1] == trace_id
    assert b1["stop"] == ["<|im_end|>", "<|im_start|>"] and b1["stream"] is True
    assert b1["skip_special_tokens"] is False and b1["model"] == "hermes-3-70b"
    assert b2["prompt"].startswith(b1["prompt"] + '<tool_call>\n{"name": "echo"')
    assert b2["prompt"].endswith(
        '{"name": "echo", "content": "hi"}\n</tool_response>\n<|im_end|>\n<|im_start|>assistant\n'
    )


def test_an_engine_overflow_compacts_instead_of_failing_the_run(server: Server) -> None:
    turns = [user_turn(f"message {n} " + "x" * 200) for n in range(10)]
    spec = new_run(tenant="t", thread_id="th", limits=Limits(context_window=10**6))
    server.outputs = ["fine"]
    server.overflow_above = len(spec.prefix) + 1500
    store = MemoryStore()

    async def main() -> Any:
        engine = OpenAICompletionsEngine(url(server), "m")
        try:
            return await Agent(engine, FunctionExecutor({}), store).run(spec, first_checkpoint(spec, turns))
        finally:
            await engine.aclose()

    assert asyncio.run(main()).stop_reason == "answer"
    assert [e.kind for e in store.streams[spec.tenant, spec.run_id]].count("compacted") >= 1
    assert (
        "message 9" in server.requests[-1][1]["prompt"]
        and "message 0" not in server.requests[-1][1]["prompt"]
    )


def test_other_http_errors_are_engine_errors(server: Server) -> None:
    async def main() -> None:
        engine = OpenAICompletionsEngine(url(server) + "/nowhere", "m")
        try:
            async for _ in engine.stream(CompletionRequest("hi")):
                pass
        finally:
            await engine.aclose()

    with pytest.raises(EngineError, match="HTTP 404"):
        asyncio.run(main())


def test_a_constrained_run_sends_vllms_structural_tag_option(server: Server) -> None:
    server.outputs = ['<tool_call>\n{"name": "echo", "arguments": {"text": "hi"}}\n</tool_call>', "Said hi."]
    spec = new_run(tenant="t", thread_id="th", tools=[ECHO], constrained=True, tool_choice=("echo",))

    async def main() -> Any:
        engine = OpenAICompletionsEngine(url(server), "m")
        try:
            agent = Agent(engine, FunctionExecutor({"echo": lambda text: text}), MemoryStore())
            return await agent.run(spec, first_checkpoint(spec, [user_turn("say hi")]))
        finally:
            await engine.aclose()

    assert asyncio.run(main()).stop_reason == "answer"
    (_, first), (_, second) = server.requests
    # vLLM's CompletionRequest.structured_outputs (StructuredOutputsParams): structural_tag is a JSON string.
    assert json.loads(first["structured_outputs"]["structural_tag"]) == tool_calls(
        [ECHO], require=True, single=True
    )
    assert json.loads(second["structured_outputs"]["structural_tag"]) == tool_calls([ECHO])


def test_an_unconstrained_request_has_no_structured_outputs(server: Server) -> None:
    server.outputs = ["hello"]

    async def main() -> None:
        engine = OpenAICompletionsEngine(url(server), "m")
        try:
            async for _ in engine.stream(CompletionRequest("hi")):
                pass
        finally:
            await engine.aclose()

    asyncio.run(main())
    assert "structured_outputs" not in server.requests[0][1]


def test_the_demo_runs_against_an_endpoint(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CADUCEUS_SCRATCH_ROOT", str(tmp_path))
    monkeypatch.delenv("REDIS_URL", raising=False)
    server.outputs = [
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call>',
        '<tool_call>\n{"name": "files", "arguments": {"action": "write", "path": "result.txt", "content": "391"}}'
        "\n</tool_call>",
        "17 times 23 is 391; it is saved in result.txt.",
    ]
    assert main(["demo", "--endpoint", url(server), "--served-model", "hermes-3-8b"]) == 0
    out = capsys.readouterr().out
    assert 'ran calculator in its sandbox -> {"name": "calculator", "content": 391}' in out
    assert "verdict: the model stored the calculator's result (391)" in out
    assert "answer: '17 times 23 is 391; it is saved in result.txt.'" in out
    # The conversations' directories (the scratch root also holds the sandbox's own `.caduceus` state).
    conversations = [name for name in os.listdir(tmp_path) if not name.startswith(".")]
    assert [(tmp_path / name / "result.txt").read_text() for name in conversations] == ["391"]
    bodies = [body for _, body in server.requests]
    assert all(body["model"] == "hermes-3-8b" and "structured_outputs" in body for body in bodies)
