"""What a sandboxed task may use: its limits, its network, its scratch directory, and the task itself.

Plain frozen dataclasses shared by every sandbox implementation and by the in-sandbox host program
(which reads them back from JSON), so this module imports nothing but the standard library.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

#: How a tool runs. ``trusted``: in the worker's own process (only for tools the operator flagged).
#: ``sandboxed``: in the strongest sandbox that works here, or a plain clean-environment process when none
#: does. ``untrusted``: runs code from the model; refused when no real isolation works.
Isolation: TypeAlias = Literal["trusted", "sandboxed", "untrusted"]

#: The mechanism in force, strongest first.
Mechanism: TypeAlias = Literal["bubblewrap", "landlock", "process"]

_CONVERSATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one task. Sizes in bytes, times in seconds.

    ``memory_bytes``, ``processes`` and ``cpus`` bound the call as a whole (its cgroup, where one can be
    made); the others bound each of its processes (resource limits)."""

    memory_bytes: int = 512 * 1024 * 1024
    cpu_seconds: int = 10
    wall_seconds: float = 15.0
    processes: int = 32
    open_files: int = 64
    output_bytes: int = 1024 * 1024
    file_bytes: int = 64 * 1024 * 1024
    cpus: float = 1.0  # the call's CPU share: at most this many CPUs' worth of time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return cls(**data)


@dataclass(frozen=True)
class Task:
    """One tool call to run: ``target`` is ``module:function``, imported inside the sandbox."""

    target: str
    arguments: dict[str, Any]
    scratch: Path
    limits: Limits = field(default_factory=Limits)
    egress: tuple[str, ...] = ()
    untrusted: bool = False

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


@dataclass(frozen=True)
class Outcome:
    """What a task produced: ``content``, or an ``error`` (type and message) the model can act on."""

    content: Any = None
    error_type: str | None = None
    error_message: str = ""


def check_conversation(conversation: str) -> str:
    """A conversation id safe to use as a directory name, or ``ValueError``."""
    if not _CONVERSATION.fullmatch(conversation) or ".." in conversation:
        raise ValueError(f"conversation id {conversation!r} must be 1-128 letters, digits, '_', '.', '-'")
    return conversation
