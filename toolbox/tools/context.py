"""What a running tool may know about its surroundings, set by whoever runs it (the sandbox host).

Tools read their scratch directory, their network allow-list and their output budget from here rather
than from their arguments, because arguments come from the model and these must come from the operator.
"""

from __future__ import annotations

import contextvars
from pathlib import Path


class DeniedError(Exception):
    """A tool refuses an action its configuration does not allow (reported as a ``denied`` result)."""


class OutputTruncatedError(Exception):
    """A tool's output passed its budget; ``partial`` is what fits (reported as ``output_truncated``)."""

    def __init__(self, message: str, partial: object) -> None:
        super().__init__(message)
        self.partial = partial


class ToolContext:
    """A plain class rather than a dataclass: importing ``dataclasses`` would add to every cold start."""

    __slots__ = ("egress", "output_bytes", "scratch")

    def __init__(
        self, scratch: Path | None = None, egress: tuple[str, ...] = (), output_bytes: int = 1024 * 1024
    ) -> None:
        self.scratch = scratch if scratch is not None else Path.cwd()
        self.egress = egress
        self.output_bytes = output_bytes


_CURRENT: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar("tool_context", default=None)


def current() -> ToolContext:
    """The context of the running tool (a default one, rooted at the working directory, outside a run)."""
    return _CURRENT.get() or ToolContext()


def use(context: ToolContext) -> contextvars.Token[ToolContext | None]:
    """Make ``context`` current; pass the token to :func:`reset` when the call ends."""
    return _CURRENT.set(context)


def reset(token: contextvars.Token[ToolContext | None]) -> None:
    _CURRENT.reset(token)
