"""A run's record in its Redis hash: the field names and the one codec to and from them.

The hash holds the spec (JSON, ``orchestrator.records.encode_spec``) and the ``RunRecord``'s fields, each
as text. The Lua scripts name these fields too (``scripts``: ``$field:name`` takes its name from here), so
the record's shape is written here only: a submission writes ``encode(RunRecord.queued(...))``, a worker's
start and every reader decode with ``decode``, and a run's end is written as ``ending`` or ``cancelled``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import UnreadableRunError
from orchestrator.ports import Outcome
from orchestrator.records import RunRecord, decode_awaiting, encode_awaiting, stored_status

SPEC = "spec"
STATUS = "status"
THREAD = "thread"
CREATED_AT = "created_at"
STEP = "step"
WINDOW_START = "window_start"
PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
JSON_RETRIES = "json_retries"
DEADLINE = "deadline"
TRACE = "trace"
MODEL = "model"
FINISHED_AT = "finished_at"
STOP_REASON = "stop_reason"
OUTPUT = "output"
VALUE = "value"
ERROR = "error"
FIRST_TURN = "first_turn"
TURN_COUNT = "turn_count"
AWAITING = "awaiting"
#: Every field of a run's hash.
FIELDS = frozenset(
    {
        SPEC,
        STATUS,
        THREAD,
        CREATED_AT,
        STEP,
        WINDOW_START,
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        JSON_RETRIES,
        DEADLINE,
        TRACE,
        MODEL,
        FINISHED_AT,
        STOP_REASON,
        OUTPUT,
        VALUE,
        ERROR,
        FIRST_TURN,
        TURN_COUNT,
        AWAITING,
    }
)


def text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def encode(record: RunRecord) -> dict[str, str]:
    """The record's fields, as text (but ``leased``, which is the lease key's, the end's fields while the
    run has not ended, and where its turns are: the submission's script and each commit write those)."""
    fields = {
        THREAD: record.thread,
        CREATED_AT: repr(record.created_at),
        STATUS: record.status,
        STEP: str(record.step),
        WINDOW_START: str(record.window_start),
        PROMPT_TOKENS: str(record.prompt_tokens),
        COMPLETION_TOKENS: str(record.completion_tokens),
        JSON_RETRIES: str(record.json_retries),
        DEADLINE: repr(record.deadline),
        TRACE: json.dumps(dict(record.trace)),
        MODEL: record.model,
    }
    ends = {FINISHED_AT: record.finished_at, STOP_REASON: record.stop_reason}
    ends |= {OUTPUT: record.output, ERROR: record.error}
    fields |= {name: repr(v) if isinstance(v, float) else v for name, v in ends.items() if v is not None}
    if record.stop_reason is not None:
        fields[VALUE] = json.dumps(record.value)
    if record.awaiting:
        fields[AWAITING] = encode_awaiting(record.awaiting)
    return fields


def decode(fields: Mapping[str, bytes | str], run_id: str, *, leased: bool = False) -> RunRecord:
    """The record of a run's hash fields (the spec's aside). A field a run has not written yet reads as
    its default; one that cannot be read raises ``UnreadableRunError``."""
    status = text(fields.get(STATUS)) or "queued"
    try:
        return _decode(fields, status, leased)
    except (ValueError, TypeError, UnreadableRunError) as exc:
        raise UnreadableRunError(f"run {run_id}: its stored record cannot be read", status=status) from exc


def _decode(fields: Mapping[str, bytes | str], status: str, leased: bool) -> RunRecord:
    def get(name: str, default: str) -> str:
        found = fields.get(name)
        return default if found is None else text(found)

    def optional(name: str) -> str | None:
        found = fields.get(name)
        return None if found is None else text(found)

    finished = get(FINISHED_AT, "")
    return RunRecord(
        status=stored_status(status),
        thread=get(THREAD, ""),
        created_at=float(get(CREATED_AT, "0")),
        step=int(get(STEP, "0")),
        window_start=int(get(WINDOW_START, "0")),
        prompt_tokens=int(get(PROMPT_TOKENS, "0")),
        completion_tokens=int(get(COMPLETION_TOKENS, "0")),
        json_retries=int(get(JSON_RETRIES, "0")),
        deadline=float(get(DEADLINE, "0")),
        trace=_trace(get(TRACE, "{}")),
        model=get(MODEL, ""),
        finished_at=float(finished) if finished else None,
        stop_reason=optional(STOP_REASON),
        output=optional(OUTPUT),
        value=json.loads(get(VALUE, "null")),
        error=optional(ERROR),
        first_turn=int(get(FIRST_TURN, "0")),
        turn_count=int(get(TURN_COUNT, "0")),
        awaiting=decode_awaiting(get(AWAITING, "[]")),
        leased=leased,
    )


def _trace(raw: str) -> dict[str, str]:
    found: Any = json.loads(raw)
    if not isinstance(found, dict):
        raise TypeError("a run's trace carrier is a JSON object")
    return {str(k): str(v) for k, v in found.items()}


def ending(outcome: Outcome, now: float) -> dict[str, str]:
    """The fields a finished run's end sets (its last commit, or ``finish``)."""
    fields = {
        STATUS: "finished",
        FINISHED_AT: repr(now),
        STOP_REASON: outcome.stop_reason,
        OUTPUT: outcome.output,
        VALUE: json.dumps(outcome.value),
    }
    if outcome.awaiting:
        fields[AWAITING] = encode_awaiting(outcome.awaiting)
    return fields


def cancelled() -> dict[str, str]:
    """The fields a queued run that is cancelled before any worker took it ends with."""
    return {STATUS: "finished", STOP_REASON: "cancelled", OUTPUT: "", VALUE: "null"}
