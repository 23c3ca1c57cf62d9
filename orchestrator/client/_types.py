"""What the runs API answers, as plain frozen dataclasses; ``raw`` keeps the JSON as the service sent it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The statuses a run does not leave.
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete", "requires_action"})
#: The kinds of event that end a run's stream.
FINAL = frozenset({"finished", "failed"})


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class Run:
    """A run as the service shows it: ``status`` is queued, in_progress, completed, failed, cancelled,
    incomplete (a limit stopped it) or requires_action (a response awaiting the client's tools)."""

    id: str
    status: str
    thread_id: str
    model: str
    created_at: float
    finished_at: float | None = None
    stop_reason: str | None = None
    output: str | None = None
    value: Any = None
    error: str | None = None
    steps: int = 0
    usage: Usage = Usage()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the run ended (its status changes no more)."""
        return self.status in TERMINAL

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Run:
        used = data.get("usage") or {}
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            thread_id=str(data.get("thread_id", "")),
            model=str(data.get("model", "")),
            created_at=float(data.get("created_at") or 0),
            finished_at=data.get("finished_at"),
            stop_reason=data.get("stop_reason"),
            output=data.get("output"),
            value=data.get("value"),
            error=data.get("error"),
            steps=int(data.get("steps") or 0),
            usage=Usage(
                **{k: int(used.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            ),
            raw=dict(data),
        )


@dataclass(frozen=True)
class RunPage:
    """A page of runs, newest first; ask for the next with ``after=page.data[-1].id`` while ``has_more``."""

    data: tuple[Run, ...]
    has_more: bool
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    """One event of a run's stream: its id (a stream resumes after it), its kind and its data."""

    id: str
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class Message:
    """One turn of a thread, as ``GET /v1/threads/{id}/messages`` shows it."""

    role: str
    content: str
