"""Creating a run: its spec (with the system turns rendered once) and its first checkpoint."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from orchestrator.ports import Checkpoint, Limits, RunSpec, Sampling
from orchestrator.tracing import new_carrier
from toolbox.hermes import neutralize, render_prompt, turn
from toolbox.protocol import SystemMessage, ToolSpec


def new_run(
    *,
    tenant: str,
    thread_id: str,
    tools: Sequence[ToolSpec] = (),
    system: str | None = None,
    json_schema: dict[str, Any] | None = None,
    limits: Limits | None = None,
    sampling: Sampling | None = None,
    run_id: str | None = None,
    constrained: bool = False,
    tool_choice: Sequence[str] = (),
    model: str = "",
    answer_instruction: str = "",
    client_tools: Sequence[str] = (),
    request: dict[str, Any] | None = None,
) -> RunSpec:
    """A run's fixed spec. The tools, JSON-mode and caller's system turns are rendered here, once, and
    so is ``answer_instruction``, the system turn shown on the turns that must answer in text.
    ``client_tools`` names the offered tools the client runs (``RunSpec.client_tools``)."""
    known = {"auto", "required", "none", *(tool.name for tool in tools)}
    unknown = [choice for choice in tool_choice if choice not in known]
    if unknown:
        raise ValueError(f"tool_choice {unknown} names no offered tool (or auto, required, none)")
    offered = {tool.name for tool in tools}
    if any(name not in offered for name in client_tools):
        raise ValueError(f"client_tools {sorted(set(client_tools) - offered)} names no offered tool")
    messages = [SystemMessage(system)] if system else []
    prefix = render_prompt(messages, list(tools), json_schema=json_schema, add_generation_prompt=False)
    return RunSpec(
        run_id=run_id or uuid.uuid4().hex,
        tenant=tenant,
        thread_id=thread_id,
        prefix=prefix,
        tools=tuple(tools),
        json_schema=json_schema,
        limits=limits or Limits(),
        sampling=sampling or Sampling(),
        constrained=constrained,
        tool_choice=tuple(tool_choice),
        model=model,
        answer_turn=turn("system", neutralize(answer_instruction)) if answer_instruction else "",
        client_tools=tuple(client_tools),
        request=dict(request or {}),
    )


def user_turn(text: str) -> str:
    """The rendered user turn for ``text`` (untrusted: neutralized)."""
    return turn("user", neutralize(text))


def first_checkpoint(spec: RunSpec, history: Sequence[str], *, now: float | None = None) -> Checkpoint:
    """The checkpoint a new run starts from: the thread's turns so far (the new user turn included)."""
    start = time.time() if now is None else now
    return Checkpoint(deadline=start + spec.limits.deadline_s, turns=list(history), trace=new_carrier())
