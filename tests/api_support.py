"""What the API's tests share, whichever store is behind the API: the keys and tenants, the tools runs may
name, and reading an SSE body as frames."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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
