"""Session affinity on a real prefix cache: two vLLM CPU replicas, routed by conversation or by load.

Deploys SmolLM2-135M on vLLM's CPU backend as two replicas of one ``LLMServer`` deployment (the service's
own CPU config, ``deploy.app.cpu_config``), twice: once with the consistent-hash router that the
orchestrator relies on (the handle's ``session_id`` is the conversation), once with Serve's default
router. Each time it runs N conversations of M steps with append-only prompts (each step's prompt is the
previous prompt, the model's answer and a new user message: exactly how the orchestrator grows a thread),
a few conversations at a time, and reads:

- vLLM's own prefix-cache counters (``vllm:prefix_cache_hits`` and ``vllm:prefix_cache_queries``, in
  tokens, from Ray's metrics endpoint), as differences: ``hit_rate_*`` over the steps after each
  conversation's first (a first step can hit no cache under any router: every conversation's first
  steps run, the counters are read, then the later steps run), ``hit_rate_all_steps_*`` over all;
- the cached tokens each response reports (``usage.prompt_tokens_details.cached_tokens``), as a check;
- each step's time to first token.

Prints a table, then, last, one line ``RESULT {json}``.

    python bench/affinity.py [--conversations 6] [--steps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

NAME = "smollm2-135m"
DEFAULT_ROUTER = "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter"
COUNTER = re.compile(
    r"^(?P<name>\S*prefix_cache_(?P<kind>hits|queries)\S*?)(\{.*\})?\s+(?P<value>[0-9.e+]+)$"
)


@dataclass
class Tally:
    ttft: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Phases:
    """The first steps and the later steps of every conversation: each part's tally and counter deltas."""

    first: tuple[Tally, dict[str, float]]
    later: tuple[Tally, dict[str, float]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def counters(port: int) -> dict[str, float]:
    """vLLM's prefix-cache counters summed over replicas, from Ray's Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    found = {"hits": 0.0, "queries": 0.0}
    for line in text.splitlines():
        match = COUNTER.match(line)
        if match and "created" not in match["name"]:
            found[match["kind"]] += float(match["value"])
    return found


async def settled(port: int, before: dict[str, float], expected_queries: int) -> dict[str, float]:
    """The counters once Ray has exported every request of the run (they are pushed every few seconds)."""
    now = counters(port)
    for _ in range(60):
        if now["queries"] - before["queries"] >= expected_queries:
            break
        await asyncio.sleep(1)
        now = counters(port)
    return {kind: now[kind] - before[kind] for kind in now}


async def step(handle: Any, prompt: str, conversation: str, affinity: bool, tally: Tally) -> str:
    from ray.serve.llm.openai_api_models import CompletionRequest  # noqa: PLC0415

    req = CompletionRequest(
        model=NAME,
        prompt=prompt,
        max_tokens=12,
        temperature=0.0,
        stream=True,
        skip_special_tokens=False,
        stream_options={"include_usage": True},
    )
    options: dict[str, Any] = {"stream": True}
    if affinity:
        options["session_id"] = conversation
    started = time.perf_counter()
    first, text = None, []
    async for batch in handle.options(**options).completions.remote(req):
        for line in batch if isinstance(batch, list) else [batch]:
            if not isinstance(line, str) or not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if first is None:
                first = time.perf_counter() - started
            text.extend(choice["text"] for choice in event["choices"])  # none in the usage event
            usage = event.get("usage") or {}
            if usage:
                tally.prompt_tokens += usage["prompt_tokens"]
                tally.cached_tokens += (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    tally.ttft.append(first or time.perf_counter() - started)
    return "".join(text)


class Conversation:
    """One conversation's prompt, grown append-only by each step (as the orchestrator grows a thread)."""

    def __init__(self, number: int) -> None:
        from toolbox.hermes import render_prompt  # noqa: PLC0415
        from toolbox.protocol import UserMessage  # noqa: PLC0415

        # A long first turn (about 700 tokens) that differs per conversation from its first tokens on.
        opening = f"Conversation {number}. " + " ".join(
            f"fact {number}-{n}: the sky is blue." for n in range(90)
        )
        self.id, self.prompt, self.turn = (
            f"conversation-{number}",
            render_prompt([UserMessage(opening)], []),
            0,
        )

    async def step(self, handle: Any, affinity: bool, tally: Tally) -> None:
        answer = await step(handle, self.prompt, self.id, affinity, tally)
        self.prompt += f"{answer}<|im_end|>\n<|im_start|>user\nAnd then (step {self.turn})?<|im_end|>\n"
        self.prompt += "<|im_start|>assistant\n"
        self.turn += 1


async def workload(handle: Any, port: int, conversations: int, steps: int, affinity: bool) -> Phases:
    """Every conversation's first step (no router can find a cache for it), then the later steps, with
    vLLM's counters read around each part."""
    talks = [Conversation(n) for n in range(conversations)]
    gate = asyncio.Semaphore(4)  # two conversations at a time per replica: the machine has two cores

    async def part(count: int) -> tuple[Tally, dict[str, float]]:
        tally, before = Tally(), counters(port)

        async def one(talk: Conversation) -> None:
            async with gate:
                for _ in range(count):
                    await talk.step(handle, affinity, tally)

        await asyncio.gather(*(one(talk) for talk in talks))
        return tally, await settled(port, before, tally.prompt_tokens)

    first = await part(1)
    later = await part(steps - 1)
    return Phases(first, later)


def deploy(affinity: bool) -> Any:
    from ray import serve  # noqa: PLC0415
    from ray.serve.llm import build_llm_deployment  # noqa: PLC0415

    from deploy.app import cpu_config  # noqa: PLC0415
    from deploy.config import ModelConfig  # noqa: PLC0415

    model = ModelConfig(device="cpu", name=NAME, replicas={"min": 2, "max": 2}, kv_cache_gib=1)
    config = cpu_config(model)
    serving = dict(config.deployment_config)
    if not affinity:
        serving["request_router_config"] = {"request_router_class": DEFAULT_ROUTER}
    config = config.model_copy(
        update={
            "deployment_config": serving,
            "engine_kwargs": config.engine_kwargs | {"enable_prompt_tokens_details": True},
        }
    )
    app = build_llm_deployment(config, name_prefix="affinity-" if affinity else "default-")
    return serve.run(app, name="affinity" if affinity else "default", route_prefix=None)


def run(port: int, conversations: int, steps: int, affinity: bool) -> Phases:
    from ray import serve  # noqa: PLC0415

    handle = deploy(affinity)
    try:
        return asyncio.run(workload(handle, port, conversations, steps, affinity))
    finally:
        serve.delete("affinity" if affinity else "default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--conversations", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415

    temp = tempfile.mkdtemp(prefix="cad-aff-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp
    port = free_port()
    try:
        ray.init(
            address="local",
            num_cpus=8,
            include_dashboard=False,
            log_to_driver=False,
            _metrics_export_port=port,
        )
        results = {mode: run(port, args.conversations, args.steps, mode) for mode in (True, False)}
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    report(results, args)


def report(results: dict[bool, Phases], args: argparse.Namespace) -> None:
    out: dict[str, Any] = {"conversations": args.conversations, "steps": args.steps}
    print(f"{'router':<9} {'hit rate':>9} {'all steps':>10} {'cached/prompt':>14}", end="")
    print(f" {'TTFT p50 ms':>12} {'first p50':>10}")
    for affinity, phases in results.items():
        mode = "affinity" if affinity else "default"
        (first, first_delta), (later, delta) = phases.first, phases.later
        hit_rate = delta["hits"] / delta["queries"] if delta["queries"] else 0.0
        queries = delta["queries"] + first_delta["queries"]
        overall = (delta["hits"] + first_delta["hits"]) / queries if queries else 0.0
        reported = later.cached_tokens / later.prompt_tokens if later.prompt_tokens else 0.0
        p50, mean = statistics.median(later.ttft) * 1000, statistics.fmean(later.ttft) * 1000
        cold = statistics.median(first.ttft) * 1000
        print(f"{mode:<9} {hit_rate:>9.3f} {overall:>10.3f} {reported:>14.3f} {p50:>12.0f} {cold:>10.0f}")
        out |= {
            f"hit_rate_{mode}": round(hit_rate, 4),
            f"hit_rate_all_steps_{mode}": round(overall, 4),
            f"reported_cached_share_{mode}": round(reported, 4),
            f"ttft_ms_{mode}": round(p50, 1),
            f"ttft_ms_mean_{mode}": round(mean, 1),
            f"ttft_ms_first_step_{mode}": round(cold, 1),
            f"queried_tokens_{mode}": int(delta["queries"]),
        }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
