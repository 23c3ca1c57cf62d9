"""Tool specs from typed functions and Google-style docstrings."""

from __future__ import annotations

import enum
from typing import Any, Literal, Optional

import pytest
from pydantic import BaseModel

from deploy.commands.protocol_demo import get_current_temperature  # the model cards' example tool
from toolbox.errors import SchemaError
from toolbox.protocol import ToolSpec
from toolbox.schema import parse_docstring, tool_spec


def test_the_model_cards_example_exactly() -> None:
    spec = tool_spec(get_current_temperature)
    assert spec == ToolSpec(
        name="get_current_temperature",
        description="Get the current temperature at a location.",
        parameters={
            "type": "object",
            "properties": {
                "location": {
                    "type": "string",
                    "description": 'The location to get the temperature for, in the format "City, Country"',
                },
                "unit": {
                    "type": "string",
                    "enum": ["celsius", "fahrenheit"],
                    "description": "The unit to return the temperature in.",
                },
            },
            "required": ["location", "unit"],
        },
        returns={
            "type": "number",
            "description": "The current temperature at the specified location in the specified units, as a float.",
        },
    )
    assert spec.to_openai() == {
        "type": "function",
        "function": {
            "name": "get_current_temperature",
            "description": "Get the current temperature at a location.",
            "parameters": spec.parameters,
        },
    }


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Order(BaseModel):
    ship_to: Address
    extra: list[Address] = []


class Opaque:
    """A type pydantic cannot describe."""


class Address(BaseModel):
    street: str
    zip_code: int | None = None


def rich(  # noqa: PLR0917 - a tool with many parameters is the point of this test
    tags: list[str],
    scores: dict[str, float],
    mode: Literal["fast", "slow"],
    address: Address,
    color: Color,
    limit: Optional[int] = None,  # noqa: UP045 - the Optional spelling is what we test
    verbose: bool = False,
    ratio: float = 0.5,
) -> dict[str, Any]:
    """Do rich things.

    A second paragraph of summary.

    Args:
        tags: Tags to apply,
            continued on a second line.
        scores (dict): Scores by name.
        mode: How fast.
        address: Where.
        color: Which color.
        limit: At most this many.
        verbose: Talk more.
        ratio: A ratio.
    """
    return {}


def test_types_defaults_literals_models_and_enums() -> None:
    spec = tool_spec(rich)
    props = spec.parameters["properties"]
    assert spec.description == "Do rich things.\n\nA second paragraph of summary."
    assert props["tags"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": "Tags to apply, continued on a second line.",
    }
    assert props["scores"] == {
        "type": "object",
        "additionalProperties": {"type": "number"},
        "description": "Scores by name.",
    }
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert props["address"]["properties"]["street"] == {"title": "Street", "type": "string"}
    assert props["address"]["required"] == ["street"]
    assert props["address"]["description"] == "Where."
    assert props["color"]["enum"] == ["red", "blue"]
    assert props["limit"] == {
        "type": ["integer", "null"],
        "default": None,
        "description": "At most this many.",
    }
    assert props["verbose"] == {"type": "boolean", "default": False, "description": "Talk more."}
    assert spec.parameters["required"] == ["tags", "scores", "mode", "address", "color"]
    assert "$defs" not in spec.parameters
    assert spec.returns == {"type": "object", "additionalProperties": True}


def test_undocumented_parameter_is_refused() -> None:
    def f(a: int, b: int) -> int:
        """Add.

        Args:
            a: First.
        """
        return a + b

    with pytest.raises(SchemaError, match="parameter 'b' is not documented"):
        tool_spec(f)


def test_documented_parameter_that_does_not_exist_is_refused() -> None:
    def f(a: int) -> int:
        """Echo.

        Args:
            a: First.
            b: Gone.
        """
        return a

    with pytest.raises(SchemaError, match=r"\['b'\]"):
        tool_spec(f)


def test_missing_docstring_and_missing_annotation_are_refused() -> None:
    def nodoc(a: int) -> int:
        return a

    def untyped(a):  # type: ignore[no-untyped-def]
        """Echo.

        Args:
            a: Anything.
        """
        return a

    with pytest.raises(SchemaError, match="no docstring summary"):
        tool_spec(nodoc)
    with pytest.raises(SchemaError, match="no type annotation"):
        tool_spec(untyped)


def test_var_args_are_refused() -> None:
    def f(*items: int) -> int:
        """Sum.

        Args:
            items: Numbers.
        """
        return sum(items)

    with pytest.raises(SchemaError, match=r"\*items"):
        tool_spec(f)


def test_unsupported_type_is_refused_with_its_name() -> None:
    def f(sock: object) -> None:
        """Use a socket.

        Args:
            sock: The socket.
        """

    def g(thing: Opaque) -> None:
        """Use a thing.

        Args:
            thing: The thing.
        """

    assert tool_spec(f).parameters["properties"]["sock"]["description"] == "The socket."
    with pytest.raises(SchemaError, match="parameter 'thing'"):
        tool_spec(g)


def test_nested_models_are_hoisted_into_defs() -> None:
    def place(order: Order) -> None:
        """Place an order.

        Args:
            order: The order.
        """

    spec = tool_spec(place)
    assert spec.parameters["properties"]["order"]["properties"]["ship_to"] == {"$ref": "#/$defs/Address"}
    assert "Address" in spec.parameters["$defs"]


def test_bad_choices_are_refused() -> None:
    def f(x: str) -> None:
        """Pick.

        Args:
            x: One. (choices: [unquoted words])
        """

    with pytest.raises(SchemaError, match="choices"):
        tool_spec(f)


def test_python_literal_choices_are_read() -> None:
    def f(x: str) -> None:
        """Pick.

        Args:
            x: One. (choices: ['a', 'b'])
        """

    assert tool_spec(f).parameters["properties"]["x"]["enum"] == ["a", "b"]


def test_bad_names_are_refused() -> None:
    with pytest.raises(SchemaError, match="tool name"):
        tool_spec(get_current_temperature, name="has space")
    assert tool_spec(get_current_temperature, name="weather.temp").name == "weather.temp"


def test_methods_and_no_parameters() -> None:
    class Clock:
        def now(self) -> str:
            """The time now."""
            return "noon"

    spec = tool_spec(Clock().now)
    assert spec.parameters == {"type": "object", "properties": {}, "required": []}
    assert spec.returns == {"type": "string"}


def test_docstring_sections() -> None:
    doc = parse_docstring(
        """Summary.

        Args:
            a (int): First
                and more.
            b: Second.

        Returns:
            str: Text.

        Raises:
            ValueError: never.
        """
    )
    assert doc.summary == "Summary."
    assert doc.params == {"a": "First and more.", "b": "Second."}
    assert doc.returns == "str: Text."


Order.model_rebuild()
