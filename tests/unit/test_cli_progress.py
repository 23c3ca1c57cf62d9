"""The CLI's rendering of run events and its SSE reading, on fixed inputs (no service)."""

from __future__ import annotations

import io

from deploy.commands.progress import Progress, describe, run_table, summary
from orchestrator.client import Event
from orchestrator.client._core import read_sse


def test_each_event_kind_has_its_line() -> None:
    call = {"call_id": "call_0_0", "name": "echo", "arguments": {"text": "a\nb"}}
    assert describe(Event("1-0", "tool_call", call)) == '  -> echo {"text": "a\\nb"}  [call_0_0]'
    failed = {"name": "echo", "ok": False, "error": {"type": "tool_error", "message": "no\nway"}}
    assert describe(Event("2-0", "tool_result", failed)) == "  <- echo error (tool_error): no way"
    step = {"step": 0, "calls": ["echo", "echo"], "errors": 1}
    assert describe(Event("3-0", "step", step)) == "step 1: 2 tool calls (echo, echo), 1 failed"
    assert (
        describe(Event("4-0", "resumed", {"worker": "w2", "step": 1})) == "  resumed by worker w2 at step 2"
    )
    assert describe(Event("5-0", "finished", {"stop_reason": "answer"})) is None
    assert describe(Event("6-0", "novel", {"x": 1})) == '  novel: {"x": 1}'
    long = describe(Event("7-0", "tool_result", {"name": "t", "ok": True, "content": "x" * 500}))
    assert long is not None and len(long) < 140 and long.endswith("…")


def test_deltas_stream_as_they_come_and_lines_start_on_a_new_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    progress = Progress(out, err)
    for text in ("Let me ", "check."):
        progress.event(Event("", "delta", {"text": text}))
    progress.event(Event("", "step", {"step": 0, "calls": []}))
    run = {"status": "completed", "stop_reason": "answer", "steps": 1, "output": "42", "usage": {}}
    progress.finished(run)
    assert err.getvalue() == (
        "Let me check.\nstep 1: model turn without tool calls\n"
        "completed, stop reason answer, 1 step, 0 tokens (0 prompt + 0 completion)\n"
    )
    assert out.getvalue() == "42\n"


def test_a_failed_run_summary_names_its_error() -> None:
    run = {"status": "failed", "steps": 0, "error": "EngineError: down", "usage": None}
    assert summary(run) == ["failed, 0 steps, 0 tokens (0 prompt + 0 completion)", "error: EngineError: down"]


def test_the_run_table_aligns_its_columns() -> None:
    runs = [
        {"id": "run_1", "status": "completed", "created_at": 0, "steps": 2, "output": "hi", "usage": {}},
        {"id": "run_22", "status": "queued", "created_at": 0, "steps": 0, "usage": {"total_tokens": 7}},
    ]
    assert run_table(runs) == [
        "ID      STATUS     CREATED  STEPS  TOKENS  OUTPUT",
        "run_1   completed  -        2      0       hi",
        "run_22  queued     -        0      7",
    ]


def test_sse_frames_join_data_lines_skip_comments_and_drop_a_cut_off_frame() -> None:
    lines = [
        "id: 1-0",
        "event: step",
        "data: {",
        'data: "a": 1}',
        "",
        ": keep-alive",
        "",
        "id: 2-0",
        "data: {",
    ]
    assert list(read_sse(lines)) == [{"id": "1-0", "event": "step", "data": '{\n"a": 1}'}]
