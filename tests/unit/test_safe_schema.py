"""Schemas cannot stall their checker: patterns match under a time budget, and what is accepted is bounded.

The hostile values below make Python's backtracking ``re`` run for longer than the age of the universe;
each test carries a short pytest timeout, so that a checker that still backtracks fails here."""

from __future__ import annotations

import json

import pytest

from toolbox.errors import SchemaError
from toolbox.hermes import check_json_answer, validate
from toolbox.protocol import ToolCall, ToolSpec
from toolbox.safe_schema import MAX_BYTES, MAX_DEPTH, check_bounds, json_depth, problems
from toolbox.schema import check_schema

EVIL = "^(a|aa)+$"  # exponential for a backtracking engine on "aaaa...!"
HOSTILE = "a" * 64 + "!"


def _tool(schema: dict[str, object]) -> ToolSpec:
    return ToolSpec("t", "A tool.", {"type": "object", **schema})


def _nested(levels: int) -> dict[str, object]:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.timeout(20)
def test_a_catastrophic_pattern_in_tool_arguments_is_refused_in_time_with_a_readable_error() -> None:
    spec = _tool({"properties": {"s": {"type": "string", "pattern": EVIL}}})
    error = validate(ToolCall("c1", "t", {"s": HOSTILE}), [spec])
    assert error is not None and error.type == "invalid_arguments"
    assert "could not be checked against the pattern '^(a|aa)+$'" in error.message
    assert "use a shorter or simpler value" in error.message
    # The same pattern still checks ordinary values, both ways.
    assert validate(ToolCall("c2", "t", {"s": "aaaa"}), [spec]) is None
    refused = validate(ToolCall("c3", "t", {"s": "aab"}), [spec])
    assert refused is not None and "'aab' does not match '^(a|aa)+$'" in refused.message


@pytest.mark.timeout(20)
def test_the_issues_pattern_and_pattern_properties_keys_are_bounded_too() -> None:
    nested = _tool({"properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}})
    error = validate(ToolCall("c1", "t", {"s": HOSTILE}), [nested])
    assert error is not None and "does not match" in error.message  # regex answers this one exactly
    keyed = {
        "type": "object",
        "patternProperties": {EVIL: {"type": "integer"}},
        "additionalProperties": False,
    }
    answer = check_json_answer(json.dumps({HOSTILE: 1}), keyed)
    assert answer.error is not None and "could not be checked against the pattern" in answer.error
    # patternProperties and additionalProperties keep their meaning.
    assert check_json_answer('{"aaa": 1}', keyed).value == {"aaa": 1}
    assert "'b' was unexpected" in (check_json_answer('{"aaa": 1, "b": 2}', keyed).error or "")
    assert "is not of type 'integer'" in (check_json_answer('{"aa": "x"}', keyed).error or "")


@pytest.mark.timeout(20)
def test_a_json_mode_answer_against_a_catastrophic_pattern_is_sent_back_not_hung_on() -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": EVIL}}}
    answer = check_json_answer(json.dumps({"code": HOSTILE}), schema)
    assert not answer.ok and "could not be checked against the pattern" in (answer.error or "")
    assert check_json_answer('{"code": "aaa"}', schema).value == {"code": "aaa"}


@pytest.mark.timeout(20)
def test_the_budget_covers_every_pattern_of_one_check_together() -> None:
    # Many strings, each slow against the pattern: the whole check still ends (the budget is shared).
    schema = {"type": "array", "items": {"type": "string", "pattern": EVIL}}
    answer = check_json_answer(json.dumps([HOSTILE] * 200), schema)
    assert answer.error is not None and "could not be checked" in answer.error


def test_unevaluated_properties_beside_pattern_properties_is_refused_not_run() -> None:
    schema = {"type": "object", "patternProperties": {EVIL: {}}, "unevaluatedProperties": False}
    answer = check_json_answer(json.dumps({HOSTILE: 1}), schema)
    assert answer.error is not None and "unevaluatedProperties" in answer.error
    with pytest.raises(SchemaError, match="combines unevaluatedProperties with patternProperties"):
        check_bounds(schema, "json_schema")


def test_schemas_deeper_or_larger_than_the_limits_are_refused_naming_the_limit() -> None:
    check_bounds(_nested(MAX_DEPTH // 2 - 1), "json_schema")
    with pytest.raises(SchemaError, match=f"json_schema is nested more than {MAX_DEPTH} levels deep"):
        check_bounds(_nested(250), "json_schema")
    big = {"type": "object", "description": "x" * MAX_BYTES}
    with pytest.raises(SchemaError, match=f"the limit is {MAX_BYTES} bytes"):
        check_bounds(big, "json_schema")
    with pytest.raises(SchemaError, match="not plain JSON"):
        check_bounds({"type": "number", "maximum": float("nan")}, "json_schema")
    with pytest.raises(SchemaError, match="not a valid regular expression"):
        check_bounds({"type": "string", "pattern": "(unclosed"}, "json_schema")
    # Tool specs (MCP servers' included) are held to the same limits.
    with pytest.raises(SchemaError, match="the parameters schema is nested more than"):
        check_schema(_tool({"properties": {"a": _nested(250)}}))


def test_depth_is_measured_without_recursion_and_stops_early() -> None:
    assert [json_depth(v) for v in (1, {}, [], {"a": [1]}, [[{"b": {}}]])] == [0, 1, 1, 2, 4]
    deep: object = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep, stop_at=65) == 65
    assert problems({"type": "integer"}, 1) == []
