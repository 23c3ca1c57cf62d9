"""A run as the store keeps it and the API shows it: its record, its statuses and its events. Plain data
and pure functions: the Redis store (``orchestrator.redis``) and the in-memory one (``orchestrator.memory``)
both speak it, and the API reads nothing else.

A record's ``status`` is the store's (``StoredStatus``: queued, running, finished, failed); what a client
reads is ``run_status(record)`` (``RunStatus``), which also tells a finished run's stop reason apart
(completed, incomplete, cancelled) and shows a run that a worker holds, before its first step is in, as in
progress. ``is_over`` says when a status changes no more. Event kinds are a closed set (``EventKind``).

The spec is stored as JSON (``encode_spec``), and only once it is proven to read back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import Field, TypeAdapter, ValidationError

from orchestrator.errors import UnreadableRunError
from orchestrator.ports import CallSlot, Checkpoint, EventKind, Outcome, RunSpec, StepCommit
from toolbox.protocol import ToolCall, ToolResult

StoredStatus: TypeAlias = Literal["queued", "running", "finished", "failed"]
RunStatus: TypeAlias = Literal[
    "queued", "in_progress", "completed", "failed", "cancelled", "incomplete", "requires_action"
]
_STATUSES: dict[str, StoredStatus] = {status: status for status in get_args(StoredStatus)}
_KINDS: dict[str, EventKind] = {kind: kind for kind in get_args(EventKind)}
#: The events after which a run's stream has nothing more.
FINAL_KINDS: frozenset[EventKind] = frozenset({"finished", "failed"})
FINAL_STATUSES: frozenset[StoredStatus] = frozenset({"finished", "failed"})

_SPEC: TypeAdapter[RunSpec] = TypeAdapter(RunSpec)
Awaited: TypeAlias = Annotated[ToolCall | ToolResult, Field(discriminator="kind")]
_AWAITING: TypeAdapter[tuple[Awaited, ...]] = TypeAdapter(tuple[Awaited, ...])
_PREVIEW = 200  # characters of a tool's result that its event carries


@dataclass(frozen=True)
class Event:
    """One event of a run's stream. ``id`` orders the stream (``event_order``): a reader resumes after the
    last id it saw."""

    id: str
    kind: EventKind
    data: dict[str, Any]


def call_data(slot: CallSlot, call: ToolCall) -> dict[str, Any]:
    """What a ``tool_call`` event says, but its ``arguments`` (which a ``call_superseded`` event leaves
    out)."""
    return {"step": slot.step, "index": slot.index, "call_id": call.id, "name": call.name}


def result_data(slot: CallSlot, result: ToolResult) -> dict[str, Any]:
    """What a ``tool_result`` event says: the call, its outcome, and its error or the start of its content
    as JSON."""
    data = {"step": slot.step, "index": slot.index, "call_id": result.call_id, "name": result.name}
    data["ok"] = result.ok
    if result.error is not None:
        return data | {"error": {"type": result.error.type, "message": _clip(result.error.message)}}
    return data | {"content": _clip(json.dumps(result.content, ensure_ascii=False, default=str))}


def finished_data(outcome: Outcome) -> dict[str, Any]:
    """What a ``finished`` event says."""
    return {"stop_reason": outcome.stop_reason, "steps": outcome.steps}


def _clip(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def event_order(event_id: str) -> tuple[int, int]:
    """An event id (``{ms}-{seq}``, as Redis streams number their entries) as a sortable pair."""
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class RunRecord:
    """A run's state as stored beside its spec: its progress (what its checkpoint is made of), then what
    readers are shown. ``thread`` is empty in records written before records named their thread;
    ``first_turn`` is where the run's own turns start in its thread (after its input) and ``turn_count``
    how many it committed; ``awaiting``: a run that ended for the client's tools (``Outcome.awaiting``);
    ``leased``: a worker holds the run (read from its lease, never stored in the record)."""

    status: StoredStatus = "queued"
    thread: str = ""
    created_at: float = 0.0
    step: int = 0
    window_start: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    json_retries: int = 0
    deadline: float = 0.0
    trace: Mapping[str, str] = field(default_factory=dict)
    model: str = ""
    finished_at: float | None = None
    stop_reason: str | None = None
    output: str | None = None
    value: Any = None
    error: str | None = None
    first_turn: int = 0
    turn_count: int = 0
    awaiting: tuple[ToolCall | ToolResult, ...] = ()
    leased: bool = False

    @classmethod
    def queued(cls, spec: RunSpec, ckpt: Checkpoint, now: float) -> RunRecord:
        """A new run's record: submitted at ``now``, to start from ``ckpt``."""
        return cls(
            thread=spec.thread_id,
            created_at=now,
            window_start=ckpt.window_start,
            deadline=ckpt.deadline,
            trace=dict(ckpt.trace),
            model=spec.model,
        )

    def checkpoint(self, turns: Sequence[str], repeats: Mapping[str, int]) -> Checkpoint:
        """The checkpoint a worker resumes from: this record's progress, the thread's ``turns`` from the
        window's start on, and the call signatures counted so far."""
        return Checkpoint(
            deadline=self.deadline,
            step=self.step,
            turns=list(turns),
            window_start=self.window_start,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            json_retries=self.json_retries,
            repeats=dict(repeats),
            trace=dict(self.trace),
        )

    def committed(self, commit: StepCommit) -> RunRecord:
        """The record once ``commit`` is in (what the Redis COMMIT script writes, field by field)."""
        return dataclasses.replace(
            self,
            status="running",
            step=commit.step + 1,
            window_start=commit.window_start,
            json_retries=commit.json_retries,
            prompt_tokens=self.prompt_tokens + commit.prompt_tokens,
            completion_tokens=self.completion_tokens + commit.completion_tokens,
            turn_count=self.turn_count + len(commit.turns),
        )

    def unreadable(self, error: str) -> RunRecord:
        """How a run whose stored spec cannot be read is shown: failed, with ``error``."""
        return dataclasses.replace(self, status="failed", error=error)


def finished_status(stop_reason: str | None) -> RunStatus:
    """What a finished run is to a client, by its stop reason."""
    if stop_reason == "answer":
        return "completed"
    if stop_reason == "tool_calls":
        return "requires_action"
    return "cancelled" if stop_reason == "cancelled" else "incomplete"


def run_status(record: RunRecord) -> RunStatus:
    """The status a client reads: a run a worker took is in progress before its first step is in."""
    if record.status == "finished":
        return finished_status(record.stop_reason)
    if record.status == "failed":
        return "failed"
    return "in_progress" if record.status == "running" or record.leased else "queued"


def is_over(status: StoredStatus | None) -> bool:
    """Whether a run with this stored status changes no more (``None``: its record is gone)."""
    return status is None or status in FINAL_STATUSES


def stored_status(text: str) -> StoredStatus:
    """A status read back from a store; ``UnreadableRunError`` for one no version of us writes."""
    found = _STATUSES.get(text)
    if found is None:
        raise UnreadableRunError(f"unknown run status {text!r}")
    return found


def event_kind(text: str) -> EventKind:
    """An event kind read back from a store: every kind a store holds was written as an ``EventKind``."""
    found = _KINDS.get(text)
    if found is None:
        raise UnreadableRunError(f"unknown event kind {text!r}")
    return found


def encode_spec(spec: RunSpec) -> bytes:
    """The spec as it is stored, once it is proven to read back: ``UnreadableRunError`` if it would not
    (pydantic's JSON reader refuses nesting deeper than 200 levels, which a Python dict can hold)."""
    data = _SPEC.dump_json(spec)
    try:
        _SPEC.validate_json(data)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else "invalid"
        raise UnreadableRunError(f"run {spec.run_id}: its spec would not read back ({problem})") from None
    return data


def decode_spec(raw: bytes | str, run_id: str, status: str = "") -> RunSpec:
    try:
        return _SPEC.validate_json(raw)
    except ValidationError as exc:
        raise UnreadableRunError(f"run {run_id}: its stored spec cannot be read", status=status) from exc


def encode_awaiting(calls: Sequence[ToolCall | ToolResult]) -> str:
    """A run's awaited calls (``Outcome.awaiting``) as stored."""
    return _AWAITING.dump_json(tuple(calls)).decode()


def decode_awaiting(raw: str | bytes) -> tuple[ToolCall | ToolResult, ...]:
    try:
        return _AWAITING.validate_json(raw)
    except ValidationError as exc:
        raise UnreadableRunError("a run's awaited calls cannot be read") from exc
