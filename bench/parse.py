"""Parse throughput of the Hermes reader on a 1 MB model output with many tool calls.

Measures, side by side in one process and interleaved round by round (these machines are noisy):
batch ``parse``; the ``StreamParser`` fed 16-character and 1-character chunks; and, to show why the
streaming parser must be incremental, a naive streamer that re-parses the whole text on every delta,
whose total work grows with the square of the output.

Prints a table, then, last, one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable

from toolbox.hermes import ParsedTurn, StreamParser, parse

MB = 1_000_000


def model_output(size: int) -> str:
    """A long agent turn: short prose between calls whose arguments hold the awkward cases."""
    parts: list[str] = []
    n = 0
    total = 0
    while total < size:
        arguments = {
            "query": f"weather in city {n} & <b>bold</b>",
            "limit": n,
            "tags": ["a", "b", "日本"],
            "code": "if a > b:\n    print('</tool_call>')",
        }
        call = json.dumps({"name": "search", "arguments": arguments})
        part = f"Step {n}: checking.\n<tool_call>\n{call}\n</tool_call>\n"
        parts.append(part)
        total += len(part)
        n += 1
    return "".join(parts)[:size]


def stream(text: str, size: int) -> ParsedTurn:
    parser = StreamParser()
    feed = parser.feed
    if size == 1:
        for char in text:
            feed(char)
    else:
        for start in range(0, len(text), size):
            feed(text[start : start + size])
    return parser.finish()


def naive_stream(text: str, size: int) -> ParsedTurn:
    """What a non-incremental streamer does: parse everything seen so far on every delta."""
    result = parse("")
    for end in range(size, len(text) + size, size):
        result = parse(text[:end])
    return result


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--size", type=int, default=MB, help="bytes of model output (default 1 MB)")
    args.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is kept")
    options = args.parse_args()

    text = model_output(options.size)
    reference = parse(text)
    assert stream(text, 1) == reference and stream(text, 16) == reference, "streaming differs from batch"
    mb = len(text.encode()) / MB

    runs: dict[str, Callable[[], object]] = {
        "batch parse": lambda: parse(text),
        "stream, 16-char chunks": lambda: stream(text, 16),
        "stream, 1-char chunks": lambda: stream(text, 1),
    }
    best = {name: float("inf") for name in runs}
    for _ in range(options.rounds):
        for name, fn in runs.items():
            best[name] = min(best[name], timed(fn))

    print(f"{mb:.2f} MB of output, {len(reference.tool_calls)} tool calls, best of {options.rounds} rounds")
    print(f"{'method':<28}{'seconds':>10}{'MB/s':>10}{'vs batch':>10}")
    batch = best["batch parse"]
    for name, seconds in best.items():
        print(f"{name:<28}{seconds:>10.3f}{mb / seconds:>10.2f}{batch / seconds:>10.2f}")

    print("\nincremental vs re-parse on every 16-char delta (total seconds; the naive one is quadratic)")
    print(f"{'output bytes':>12}{'incremental':>14}{'re-parse':>12}{'ratio':>10}")
    growth = []
    for size in (4_000, 8_000, 16_000, 32_000):
        sample = text[:size]
        incremental = min(timed(lambda s=sample: stream(s, 16)) for _ in range(3))  # type: ignore[misc]
        naive = timed(lambda s=sample: naive_stream(s, 16))  # type: ignore[misc]
        assert naive_stream(sample, 16) == stream(sample, 16)
        growth.append((size, incremental, naive))
        print(f"{size:>12}{incremental:>14.4f}{naive:>12.3f}{naive / incremental:>10.0f}")

    result = {
        "bytes": len(text.encode()),
        "calls": len(reference.tool_calls),
        "batch_mb_s": round(mb / batch, 2),
        "stream_16char_mb_s": round(mb / best["stream, 16-char chunks"], 2),
        "stream_1char_mb_s": round(mb / best["stream, 1-char chunks"], 2),
        "stream_vs_batch_ratio": round(batch / best["stream, 1-char chunks"], 3),
        "stream_16char_vs_batch_ratio": round(batch / best["stream, 16-char chunks"], 3),
        "naive_reparse_vs_incremental_at_32kb": round(growth[-1][2] / growth[-1][1], 1),
        "naive_reparse_growth_4kb_to_32kb": round(growth[-1][2] / growth[0][2], 1),
        "incremental_growth_4kb_to_32kb": round(growth[-1][1] / growth[0][1], 1),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
