"""Argument validation with JSON Schema."""

from __future__ import annotations

from typing import Any

import pytest

from toolbox.hermes import validate
from toolbox.protocol import ToolCall, ToolSpec

SPEC = ToolSpec(
    name="book",
    description="Book a table.",
    parameters={
        "type": "object",
        "properties": {
            "people": {"type": "integer", "minimum": 1},
            "name": {"type": "string", "minLength": 1},
            "vip": {"type": "boolean"},
            "time": {"type": "string", "enum": ["lunch", "dinner"]},
            "notes": {"type": ["string", "null"]},
        },
        "required": ["people", "name"],
        "additionalProperties": False,
    },
)


def call(**arguments: Any) -> ToolCall:
    return ToolCall(id="c1", name="book", arguments=arguments)


def test_valid_call() -> None:
    assert validate(call(people=2, name="Ada", vip=False, time="lunch", notes=None), SPEC) is None


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"people": True, "name": "Ada"}, "at 'people': True is not of type 'integer'"),
        ({"people": 0, "name": "Ada"}, "at 'people': 0 is less than the minimum of 1"),
        ({"people": 2, "name": ""}, "at 'name': '' should be non-empty"),
        ({"people": 2, "name": "Ada", "vip": 0}, "at 'vip': 0 is not of type 'boolean'"),
        (
            {"people": 2, "name": "Ada", "time": "brunch"},
            "at 'time': 'brunch' is not one of ['lunch', 'dinner']",
        ),
        ({"name": "Ada"}, "'people' is a required property"),
        (
            {"people": 2, "name": "Ada", "pets": 1},
            "Additional properties are not allowed ('pets' was unexpected)",
        ),
        ({"people": "2", "name": "Ada"}, "at 'people': '2' is not of type 'integer'"),
    ],
)
def test_invalid_arguments_say_what_to_change(arguments: dict[str, Any], fragment: str) -> None:
    error = validate(call(**arguments), SPEC)
    assert error is not None
    assert error.type == "invalid_arguments"
    assert fragment in error.message
    assert "Call 'book' again" in error.message


def test_all_problems_are_reported_together() -> None:
    error = validate(call(people=True, name=1, time="x"), SPEC)
    assert error is not None
    assert error.message.count("at '") == 3


def test_unknown_tool_names_the_offered_tools() -> None:
    other = ToolSpec("menu", "Menu.", {"type": "object", "properties": {}})
    error = validate(ToolCall("c", "order", {}), [SPEC, other])
    assert error is not None
    assert error.type == "unknown_tool"
    assert "book, menu" in error.message
    assert validate(ToolCall("c", "menu", {}), {"book": SPEC, "menu": other}) is None


def test_single_spec_with_another_name_is_unknown() -> None:
    error = validate(ToolCall("c", "other", {}), SPEC)
    assert error is not None and error.type == "unknown_tool"


def test_many_problems_are_capped() -> None:
    spec = ToolSpec(
        "wide", "Wide.", {"type": "object", "properties": {f"p{n}": {"type": "integer"} for n in range(20)}}
    )
    error = validate(ToolCall("c", "wide", {f"p{n}": "x" for n in range(20)}), spec)
    assert error is not None
    assert "and 12 more" in error.message
