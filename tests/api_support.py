"""What the API's tests share, whichever store is behind the API: the keys and tenants, the tools runs may
name, the scripted model's script, and reading an SSE body as frames."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from toolbox.protocol import ToolSpec

KEYS = {"key-a": "acme", "key-b": "globex"}
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
ECHO = ToolSpec(
    "echo",
    "Repeat text.",
    {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
PAUSE = ToolSpec(
    "pause", "Wait a while.", {"type": "object", "properties": {"s": {"type": "number"}}, "required": ["s"]}
)


def frames(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The frames of an SSE body, each as its fields (comment lines left out)."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")
    if frame:
        yield frame


_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
_CALL = re.compile(r"call ([A-Za-z0-9_-]+) (\{.*?\})(?= and call |$)", re.DOTALL)


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def script(prompt: str) -> str:
    """The scripted model, stateless. On the last user text:

    - ``crash ...`` breaks the engine; ``slow ...`` pauses for ever (until cancelled or out of steps);
      ``tool ...`` calls echo once;
    - ``call NAME {json}`` (``and call NAME {json}`` for more) calls those tools once, then says what the
      last tool turn holds (``tool said: ...``);
    - in JSON mode, answers the user's text (which is JSON);
    - anything else is answered at once with ``echo: <the last user text>``."""
    found = _USER.findall(prompt)
    last = found[-1] if found else ""
    since = prompt[prompt.rfind("<|im_start|>user\n") :]
    tool_turns = since.count("<|im_start|>tool\n")
    if last.startswith("crash"):
        raise RuntimeError("the engine broke")  # the worker records the run as failed
    if last.startswith("slow"):
        return call("pause", s=0.05, n=tool_turns)  # n varies, so it is never a repeated call
    if last.startswith("tool") and tool_turns == 0:
        return call("echo", text=last)
    calls = _CALL.findall(last) if last.startswith("call ") else []
    if calls and tool_turns == 0:
        return "".join(
            f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>' for name, args in calls
        )
    if calls:
        payloads = [
            json.loads(payload) for payload in _RESPONSE.findall(since[since.rfind("<|im_start|>tool\n") :])
        ]
        return "tool said: " + "; ".join(json.dumps(p.get("content", p.get("error"))) for p in payloads)
    if "answers in JSON" in prompt:
        return last
    return f"echo: {last}"
