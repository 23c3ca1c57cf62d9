"""The ``current_time`` tool."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def current_time(timezone: str = "UTC") -> str:
    """Get the current date and time in ISO 8601 format.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris" or "UTC".
    Returns:
        The current date and time with its UTC offset.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None
    return datetime.now(zone).isoformat(timespec="seconds")
