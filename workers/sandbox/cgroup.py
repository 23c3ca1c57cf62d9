"""A process-count limit per sandbox through the cgroup ``pids`` controller, where we may write one.

``RLIMIT_NPROC`` does not bound a fork bomb when the worker runs as root (the kernel exempts root's user),
so where the host lets us create cgroups (v1 ``/sys/fs/cgroup/pids`` or a v2 tree with the ``pids``
controller) each sandbox host gets a group of its own with ``pids.max`` set. Where it does not, the
limit falls back to ``RLIMIT_NPROC`` and ``caduceus doctor`` says so.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

_V1 = Path("/sys/fs/cgroup/pids")
_V2 = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def _writable_root() -> Path | None:
    if (_V1 / "cgroup.procs").exists() and os.access(_V1, os.W_OK):
        return _make(_V1 / "caduceus", enable=False)
    for base in _V2:
        if "pids" in _read(base / "cgroup.subtree_control").split() and os.access(base, os.W_OK):
            return _make(base / "caduceus", enable=True)
    return None


def _make(root: Path, *, enable: bool) -> Path | None:
    try:
        root.mkdir(exist_ok=True)
        if enable:  # cgroup v2: children get a pids controller only when the parent delegates it
            (root / "cgroup.subtree_control").write_text("+pids")
    except OSError:
        return None
    return root


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class PidsGroups:
    """Creates one ``pids`` cgroup per sandbox host under ``<root>/caduceus``."""

    def __init__(self) -> None:
        self.root = _writable_root()

    @property
    def available(self) -> bool:
        return self.root is not None

    def create(self) -> Path | None:
        if self.root is None:
            return None
        group = self.root / uuid.uuid4().hex[:16]
        try:
            group.mkdir()
        except OSError:
            return None
        return group

    @staticmethod
    def set_max(group: Path | None, count: int) -> None:
        if group is not None:
            with contextlib.suppress(OSError):
                (group / "pids.max").write_text(str(count))

    @staticmethod
    def remove(group: Path | None) -> None:
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()
