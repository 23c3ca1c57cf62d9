"""User tools for the workers tests, registered by import path like an operator's own package."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


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


def my_cgroup_limits() -> dict[str, str]:
    """Report the cgroup limits this call's process runs under (for the 'process' mechanism, which can
    see /sys)."""
    found: dict[str, str] = {}
    files = {
        "memory": ("memory.max", "memory.limit_in_bytes"),
        "pids": ("pids.max",),
        "cpu": ("cpu.max", "cpu.cfs_quota_us"),
    }
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["memory", "pids", "cpu"]:
            mount = "/sys/fs/cgroup" + (f"/{controller}" if controllers else "")
            for name in files.get(controller, ()):
                with contextlib.suppress(OSError):
                    found[controller] = Path(f"{mount}{path}/{name}").read_text().strip()
    return found


CONCURRENCY = {"now": 0, "peak": 0}  # calls of ``linger`` running at once, in this process (trusted)


def linger(seconds: float) -> int:
    """Wait a while, counting the calls that run at once.

    Args:
        seconds: How long to wait.
    """
    import time  # noqa: PLC0415 (the other tools here need no clock)

    CONCURRENCY["now"] += 1
    CONCURRENCY["peak"] = max(CONCURRENCY["peak"], CONCURRENCY["now"])
    try:
        time.sleep(seconds)
    finally:
        CONCURRENCY["now"] -= 1
    return CONCURRENCY["peak"]
