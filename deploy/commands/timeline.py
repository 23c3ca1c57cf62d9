"""``caduceus runs show ID --timeline``: a run's steps as the run inspector page draws them, in the
terminal: each step's model seconds and tool seconds as bars on one scale, the tools it called, each call's
arguments and outcome."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.client import Event

WIDTH = 40  # characters of the longest step's bars


def timeline(events: Iterable[Event]) -> list[str]:
    """The lines of a run's timeline, from its events (``step``, ``tool_call``, ``tool_result``)."""
    steps: list[Mapping[str, Any]] = []
    calls: dict[str, list[str]] = {}
    for event in events:
        if event.kind == "step":
            steps.append(event.data)
        elif event.kind == "tool_call":
            arguments = json.dumps(event.data.get("arguments", {}), ensure_ascii=False)
            calls.setdefault(str(event.data.get("step")), []).append(f"-> {event.data['name']} {arguments}")
        elif event.kind == "tool_result":
            calls.setdefault(str(event.data.get("step")), []).append(_outcome(event.data))
    if not steps:
        return ["no steps yet"]
    longest = max(float(s.get("model_s", 0)) + float(s.get("tools_s", 0)) for s in steps) or 1.0
    lines = [f"timeline (# model, = tools; {WIDTH} characters = {longest:.3f} s)"]
    for step in steps:
        lines.append(_step_line(step, longest))
        lines += [f"           {line}" for line in calls.get(str(step["step"]), [])]
    return lines


def _step_line(step: Mapping[str, Any], longest: float) -> str:
    model, tools = float(step.get("model_s", 0)), float(step.get("tools_s", 0))
    bars = "#" * round(WIDTH * model / longest) + "=" * round(WIDTH * tools / longest)
    named = f"  {', '.join(step['calls'])}" if step.get("calls") else ""
    return f"step {step['step']:>3}  {bars:<{WIDTH}}  model {model:.3f} s  tools {tools:.3f} s{named}"


def _outcome(data: Mapping[str, Any]) -> str:
    if data.get("ok"):
        return f"<- {data['name']} ok: {data.get('content', '')}"
    error = data.get("error") or {}
    return f"<- {data['name']} {error.get('type', 'error')}: {error.get('message', '')}"
