"""How the CLI shows runs: a run's progress as its events come (``caduceus run --follow``), its end, and
the one-run and many-run views of ``caduceus runs``.

Progress goes to stderr, one line per tool call, tool result and step (token deltas, if the service sends
``delta`` events, as they arrive); the answer goes to stdout, so ``caduceus run "..." > answer.txt`` keeps
the answer alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from orchestrator.client import Event

_CLIP = 120  # characters of arguments and results shown on a progress line


def _clip(text: str, limit: int = _CLIP) -> str:
    text = " ".join(text.split())  # one line, whatever the value held
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tool_call(data: Mapping[str, Any]) -> str:
    arguments = json.dumps(data.get("arguments", {}), ensure_ascii=False)
    return f"  -> {data.get('name')} {_clip(arguments)}  [{data.get('call_id', '')}]"


def _tool_result(data: Mapping[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, Mapping):
        return f"  <- {data.get('name')} error ({error.get('type')}): {_clip(str(error.get('message', '')))}"
    if not data.get("ok", True):
        return f"  <- {data.get('name')} error"
    return f"  <- {data.get('name')} ok: {_clip(str(data.get('content', '')))}"


def _step(data: Mapping[str, Any]) -> str:
    calls: list[str] = list(data.get("calls", []))
    number = int(data.get("step", 0)) + 1
    if not calls:
        return f"step {number}: model turn without tool calls"
    errors = int(data.get("errors", 0))
    failed = f", {errors} failed" if errors else ""
    return f"step {number}: {len(calls)} tool call{'s' * (len(calls) != 1)} ({', '.join(calls)}){failed}"


def _compacted(data: Mapping[str, Any]) -> str:
    return f"  compacted: {data.get('dropped')} old turns left the prompt"


def _resumed(data: Mapping[str, Any]) -> str:
    return f"  resumed by worker {data.get('worker')} at step {int(data.get('step', 0)) + 1}"


_LINES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "tool_call": _tool_call,
    "tool_result": _tool_result,
    "step": _step,
    "compacted": _compacted,
    "resumed": _resumed,
}


def describe(event: Event) -> str | None:
    """The progress line for an event; ``None`` for the final events (the run's summary tells them)."""
    if event.kind in ("finished", "failed"):
        return None
    line = _LINES.get(event.kind)
    if line is None:
        return f"  {event.kind}: {_clip(json.dumps(event.data, ensure_ascii=False))}"
    return line(event.data)


def usage(run: Mapping[str, Any]) -> str:
    used = run.get("usage") or {}
    return (
        f"{used.get('total_tokens', 0)} tokens "
        f"({used.get('prompt_tokens', 0)} prompt + {used.get('completion_tokens', 0)} completion)"
    )


def summary(run: Mapping[str, Any]) -> list[str]:
    """How a run ended: status, stop reason, steps and usage, and its error if it failed."""
    reason = f", stop reason {run['stop_reason']}" if run.get("stop_reason") else ""
    steps = int(run.get("steps", 0))
    lines = [f"{run['status']}{reason}, {steps} step{'s' * (steps != 1)}, {usage(run)}"]
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    return lines


class Progress:
    """Writes a followed run's progress to ``err`` and its answer to ``out``."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self._out, self._err = out, err
        self._mid_line = False  # deltas left the cursor after some text

    def started(self, run: Mapping[str, Any]) -> None:
        self._line(f"run {run['id']} {run['status']} (thread {run['thread_id']})")

    def event(self, event: Event) -> None:
        if event.kind == "delta":
            text = str(event.data.get("text", ""))
            self._err.write(text)
            self._err.flush()
            self._mid_line = bool(text) and not text.endswith("\n")
            return
        line = describe(event)
        if line is not None:
            self._line(line)

    def finished(self, run: Mapping[str, Any], *, answer: bool = True) -> None:
        for line in summary(run):
            self._line(line)
        if answer and run.get("output"):
            print(run["output"], file=self._out, flush=True)

    def _line(self, text: str) -> None:
        if self._mid_line:
            self._err.write("\n")
            self._mid_line = False
        print(text, file=self._err, flush=True)


def when(created_at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created_at)) if created_at else "-"


def run_table(runs: list[Mapping[str, Any]]) -> list[str]:
    """One line per run: id, status, when created, steps, tokens and the start of its answer."""
    rows = [("ID", "STATUS", "CREATED", "STEPS", "TOKENS", "OUTPUT")]
    for run in runs:
        tokens = str((run.get("usage") or {}).get("total_tokens", 0))
        output = _clip(run.get("output") or run.get("error") or "", 40)
        rows.append(
            (run["id"], run["status"], when(run.get("created_at", 0)), str(run["steps"]), tokens, output)
        )
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def run_details(run: Mapping[str, Any]) -> list[str]:
    """A run as ``label: value`` lines, its answer last."""
    fields = [
        ("id", run["id"]),
        ("status", run["status"]),
        ("stop reason", run.get("stop_reason") or "-"),
        ("thread", run["thread_id"]),
        ("model", run.get("model") or "-"),
        ("created", when(run.get("created_at", 0))),
        ("steps", str(run.get("steps", 0))),
        ("usage", usage(run)),
        ("trace", run.get("trace_id") or "-"),
    ]
    if run.get("error"):
        fields.append(("error", run["error"]))
    lines = [f"{label + ':':<13}{value}" for label, value in fields]
    if run.get("output"):
        lines += ["output:", run["output"]]
    return lines
