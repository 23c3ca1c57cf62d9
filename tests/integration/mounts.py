"""Unmounting the scratch volumes tests leave behind. A conversation's volume outlives the executor that
mounted it on purpose (its files stay visible after a worker stops), but not the test that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def unmount_under(root: Path) -> None:
    prefix = f"{root}/"
    with open("/proc/self/mountinfo") as mounts:
        points = [line.split()[4] for line in mounts if line.split()[4].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", point], check=True, capture_output=True, timeout=30)
