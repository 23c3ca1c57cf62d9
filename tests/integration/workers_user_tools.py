"""User tools for the workers tests, registered by import path like an operator's own package."""

from __future__ import annotations

import os


def get_weather(city: str, unit: str = "celsius") -> dict[str, object]:
    """Get the current weather in a city.

    Args:
        city: The city, e.g. "Paris".
        unit: The temperature unit. (choices: ["celsius", "fahrenheit"])
    Returns:
        The temperature and the conditions.
    """
    return {
        "city": city,
        "temperature": 22 if unit == "celsius" else 72,
        "pid_is_sandboxed": os.getpid() < 10,
    }


def where_am_i() -> str:
    """Report the working directory."""
    return os.getcwd()


def undocumented(x: int) -> int:
    """A tool whose parameter is not documented."""
    return x


def shout(text: str, times: int) -> str:
    """Repeat a text.

    Args:
        text: What to repeat.
        times: How many times.
    """
    return text * times
