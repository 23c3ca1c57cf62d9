"""A run's record: its one codec to and from the Redis hash, the status a client reads, and the Lua scripts'
names checked against the codec's (no Redis needed)."""

from __future__ import annotations

import json

import pytest

from orchestrator.errors import UnreadableRunError
from orchestrator.ports import Checkpoint, Outcome, RunSpec
from orchestrator.records import RunRecord, is_over, run_status
from orchestrator.redis import record as codec
from orchestrator.redis import scripts


def test_a_new_record_reads_back_as_written() -> None:
    spec = RunSpec("r1", "acme", "th", "", model="m")
    record = RunRecord.queued(spec, Checkpoint(deadline=123.5, window_start=2, trace={"tp": "x"}), 100.25)
    fields = codec.encode(record)
    assert fields == {
        "thread": "th",
        "created_at": "100.25",
        "status": "queued",
        "step": "0",
        "window_start": "2",
        "prompt_tokens": "0",
        "completion_tokens": "0",
        "json_retries": "0",
        "deadline": "123.5",
        "trace": '{"tp": "x"}',
        "model": "m",
    }
    stored = {name: value.encode() for name, value in fields.items()}  # as Redis answers
    assert codec.decode(stored, "r1") == record
    assert set(fields) <= codec.FIELDS


def test_an_ended_run_reads_back_with_its_end() -> None:
    ended = codec.encode(RunRecord()) | codec.ending(Outcome("r1", "answer", "hi", {"a": 1}), 5.0)
    record = codec.decode(ended, "r1")
    assert (record.status, record.stop_reason, record.output, record.value) == (
        "finished",
        "answer",
        "hi",
        {"a": 1},
    )
    assert record.finished_at == 5.0 and codec.encode(record) == ended
    cancelled = codec.decode(codec.encode(RunRecord()) | codec.cancelled(), "r1")
    assert (run_status(cancelled), cancelled.finished_at, cancelled.value) == ("cancelled", None, None)


def test_fields_a_record_does_not_have_yet_read_as_their_defaults() -> None:
    record = codec.decode({"status": "running", "step": "3"}, "r1")
    assert (record.step, record.thread, record.model, record.output, record.error) == (3, "", "", None, None)
    assert run_status(record) == "in_progress"


@pytest.mark.parametrize(
    "fields", [{"status": "paused"}, {"step": "three"}, {"trace": "[]"}, {"value": "{not json"}]
)
def test_a_field_that_cannot_be_read_makes_the_record_unreadable(fields: dict[str, str]) -> None:
    with pytest.raises(UnreadableRunError):
        codec.decode({"status": "queued"} | fields, "r1")


def test_the_status_a_client_reads() -> None:
    cases = [
        (RunRecord(), "queued"),
        (RunRecord(leased=True), "in_progress"),  # taken by a worker, no step in yet
        (RunRecord(status="running"), "in_progress"),
        (RunRecord(status="finished", stop_reason="answer"), "completed"),
        (RunRecord(status="finished", stop_reason="cancelled"), "cancelled"),
        (RunRecord(status="finished", stop_reason="max_steps"), "incomplete"),
        (RunRecord(status="failed"), "failed"),
    ]
    assert [run_status(record) for record, _ in cases] == [status for _, status in cases]
    assert [is_over(status) for status in ("queued", "running", "finished", "failed", None)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_scripts_name_only_the_codecs_fields_statuses_and_event_kinds() -> None:
    assert (
        scripts.lua("HGET $field:status == $status:running, $event:step")
        == "HGET 'status' == 'running', 'step'"
    )
    for wrong in ("$field:stauts", "$status:done", "$event:progress"):
        with pytest.raises(KeyError):
            scripts.lua(wrong)
    texts = [text for name, text in vars(scripts).items() if name.isupper() and isinstance(text, str)]
    assert len(texts) == 15 and not any("$" in text for text in texts)
    assert json.loads(json.dumps(codec.cancelled())) == codec.cancelled()
