"""The real engine: vLLM's CPU backend behind Ray Serve LLM's ``LLMServer``, serving SmolLM2-135M.

Starts a private local Ray, deploys the model exactly as the service does (``deploy.app.cpu_config``: one
CPU replica, float32, eager), and measures through the deployment handle, as the orchestrator calls it:

- load: seconds from ``serve.run`` to a replica ready to answer;
- decoding speed at batch 1 and batch 8 (128-token completions that ignore the end-of-turn token),
  unconstrained, and at batch 1 constrained to valid tool calls (vLLM's structured outputs with our
  structural tag), best of ``--rounds`` rounds, interleaved (these machines are noisy);
- time to first token for a ~500-token prompt, cold (never seen) and cached (the same prompt again: vLLM's
  prefix cache);
- peak resident memory of the replica and its vLLM processes, sampled while it works.

Prints a table, then, last, one line ``RESULT {json}``.

    python bench/engine.py [--rounds 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TQDM_DISABLE", "1")

NAME = "smollm2-135m"


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


class PeakRss:
    """Samples the summed RSS of the LLM replica's processes (the replica and its children)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, replica_rss_mb())


def replica_rss_mb() -> float:
    import psutil  # noqa: PLC0415

    total = 0
    for process in psutil.process_iter(["cmdline"]):
        if "LLMServer" not in " ".join(process.info["cmdline"] or []):
            continue
        family = [process, *process.children(recursive=True)]
        for member in family:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                continue
    return total / 2**20


def request(prompt: str, tokens: int, **options: Any) -> Any:
    from ray.serve.llm.openai_api_models import CompletionRequest  # noqa: PLC0415

    return CompletionRequest(
        model=NAME,
        prompt=prompt,
        max_tokens=tokens,
        temperature=0.0,
        stream=True,
        skip_special_tokens=False,
        stream_options={"include_usage": True},  # the completion's token count, from vLLM
        **options,
    )


async def one(handle: Any, req: Any) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, completion tokens) for one streamed completion."""
    started = time.perf_counter()
    first = None
    usage = 0
    async for batch in handle.options(stream=True).completions.remote(req):
        for line in batch if isinstance(batch, list) else [batch]:
            if not isinstance(line, str) or not line.startswith("data: {"):
                continue
            event = json.loads(line.removeprefix("data: "))
            if first is None and event["choices"][0]["text"]:
                first = time.perf_counter() - started
            usage = (event.get("usage") or {}).get("completion_tokens", usage)
    total = time.perf_counter() - started
    return first or total, total, usage


async def rate(handle: Any, reqs: list[Any]) -> float:
    """Tokens per second over the whole batch (all requests at once)."""
    started = time.perf_counter()
    results = await asyncio.gather(*(one(handle, req) for req in reqs))
    return sum(tokens for _, _, tokens in results) / (time.perf_counter() - started)


async def measure(handle: Any, rounds: int, tokens: int) -> dict[str, float]:
    from toolbox.hermes import render_prompt  # noqa: PLC0415
    from toolbox.hermes.constraint import tool_calls  # noqa: PLC0415
    from toolbox.protocol import UserMessage  # noqa: PLC0415
    from toolbox.schema import tool_spec  # noqa: PLC0415

    specs = [tool_spec(multiply)]
    # One prompt for every rate, so the constraint is the only difference between b1 and b1c.
    prompt = render_prompt([UserMessage("What is 17 times 23? Then tell me a story.")], specs)
    tag = {"structural_tag": json.dumps(tool_calls(specs))}
    best = {"b1": 0.0, "b8": 0.0, "b1c": 0.0}
    for _ in range(rounds):
        best["b1"] = max(best["b1"], await rate(handle, [request(prompt, tokens, ignore_eos=True)]))
        batch = [request(prompt + f"({n})", tokens, ignore_eos=True) for n in range(8)]
        best["b8"] = max(best["b8"], await rate(handle, batch))
        constrained = request(prompt, tokens, ignore_eos=True, structured_outputs=tag)
        best["b1c"] = max(best["b1c"], await rate(handle, [constrained]))
    # A ~500-token prompt no request has seen (a fresh nonce first), then the same prompt again.
    long = render_prompt([UserMessage(f"{uuid.uuid4().hex} " + "the quick brown fox jumps " * 100)], specs)
    cold, _, _ = await one(handle, request(long, 1))
    cached, _, _ = await one(handle, request(long, 1))
    return best | {"ttft_cold": cold, "ttft_cached": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    import ray  # noqa: PLC0415
    from ray import serve  # noqa: PLC0415
    from ray.serve.llm import build_llm_deployment  # noqa: PLC0415

    from deploy.app import cpu_config  # noqa: PLC0415
    from deploy.config import ModelConfig  # noqa: PLC0415

    temp = tempfile.mkdtemp(prefix="cad-bench-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp
    try:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        config = cpu_config(ModelConfig(device="cpu", name=NAME))
        with PeakRss() as rss:
            started = time.perf_counter()
            handle = serve.run(build_llm_deployment(config), name="engine-bench", route_prefix=None)
            load_s = time.perf_counter() - started
            figures = asyncio.run(measure(handle, args.rounds, args.tokens))
        report(figures, load_s, rss.peak_mb, args)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def report(figures: dict[str, float], load_s: float, rss_mb: float, args: argparse.Namespace) -> None:
    rows = [
        ("load (serve.run to ready)", f"{load_s:.1f} s"),
        (f"batch 1, {args.tokens} tokens", f"{figures['b1']:.1f} tok/s"),
        (f"batch 8, {args.tokens} tokens each", f"{figures['b8']:.1f} tok/s"),
        ("batch 1, constrained tool calls", f"{figures['b1c']:.1f} tok/s"),
        ("TTFT, ~500-token prompt, cold", f"{figures['ttft_cold'] * 1000:.0f} ms"),
        ("TTFT, same prompt, cached", f"{figures['ttft_cached'] * 1000:.0f} ms"),
        ("peak RSS, replica + vLLM processes", f"{rss_mb:.0f} MB"),
        ("batching: b8 / b1", f"{figures['b8'] / figures['b1']:.2f}x"),
        ("cache: cached / cold TTFT", f"{figures['ttft_cached'] / figures['ttft_cold']:.2f}"),
        ("constraint: constrained / free b1", f"{figures['b1c'] / figures['b1']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    result = {
        "tok_s_b1": round(figures["b1"], 2),
        "tok_s_b8": round(figures["b8"], 2),
        "tok_s_b1_constrained": round(figures["b1c"], 2),
        "ttft_ms_cold": round(figures["ttft_cold"] * 1000, 1),
        "ttft_ms_cached": round(figures["ttft_cached"] * 1000, 1),
        "rss_mb": round(rss_mb),
        "load_s": round(load_s, 1),
        "rounds": args.rounds,
        "tokens": args.tokens,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
