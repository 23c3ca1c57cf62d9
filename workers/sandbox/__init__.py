"""Sandboxed execution of tool calls.

``Sandbox`` is the Protocol the executor talks to; ``create_sandbox()`` returns the strongest one that
works on this machine (see ``detect``): bubblewrap namespaces + seccomp + limits, else Landlock + seccomp
+ limits, else a plain clean-environment process that refuses untrusted tools. Every mechanism runs tasks
in pre-started, single-use hosts from a warm pool (``pool``), one fork per task (``workers/sandboxhost``).

Every host runs in a cgroup of its own (``cgroup``): a call's memory, process count and CPU share are
bounded for all its processes together, not per process.

The scratch directory. Each conversation gets one private writable directory, ``<root>/<conversation>``
(mode 0700), where ``<root>`` is ``$CADUCEUS_SCRATCH_ROOT`` if set, else ``$CADUCEUS_DATA_DIR/scratch``,
else ``~/.local/share/caduceus/scratch``. Under bubblewrap it is the only host directory a tool can
write, mounted at ``/scratch`` and used as its working and home directory; files persist across the
conversation's calls. The ``files`` tool is confined to it, symlinks included. Where the worker may
loop-mount, it is a filesystem of its own with the conversation's disk quota, and unused conversations
expire (``scratch``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from workers.sandbox.detect import Detection, detect
from workers.sandbox.policy import Isolation, Limits, Mechanism, Outcome, Task, check_conversation
from workers.sandbox.pool import PooledSandbox

__all__ = [
    "Detection",
    "Isolation",
    "Limits",
    "Mechanism",
    "Outcome",
    "PooledSandbox",
    "Sandbox",
    "Task",
    "create_sandbox",
    "detect",
    "scratch_dir",
    "scratch_root",
]


class Sandbox(Protocol):
    """Runs one task in isolation and returns its outcome; tool failures are outcomes, not exceptions."""

    mechanism: Mechanism

    async def run(self, task: Task) -> Outcome: ...

    async def settle(self) -> None:
        """Wait until the processes of finished tasks have exited."""

    async def discard(self, scratch: Path) -> None:
        """Stop the warm hosts bound to ``scratch`` (its conversation is being let go)."""

    async def keep_spare(self, spare: int) -> int:
        """Keep ``spare`` hosts ready from now on (where hosts wait bound to no conversation), and wait
        until they are; returns how many are ready."""

    def problems(self) -> list[str]:
        """Why a call cannot be bounded as a whole here (missing cgroup controllers); empty when it can."""

    async def close(self) -> None: ...


def create_sandbox(
    *, preload: tuple[str, ...] = (), warm: int = 1, spare: int | None = None
) -> PooledSandbox:
    """The strongest sandbox that works here, with ``preload`` modules imported in its warm hosts
    (``warm`` per conversation where hosts are bound at their start, ``spare`` per kind in the fleet)."""
    return PooledSandbox(detect().mechanism, preload=preload, warm=warm, spare=spare)


def scratch_root() -> Path:
    if os.environ.get("CADUCEUS_SCRATCH_ROOT"):
        return Path(os.environ["CADUCEUS_SCRATCH_ROOT"])
    if os.environ.get("CADUCEUS_DATA_DIR"):
        return Path(os.environ["CADUCEUS_DATA_DIR"]) / "scratch"
    return Path.home() / ".local" / "share" / "caduceus" / "scratch"


def scratch_dir(conversation: str, root: Path | None = None) -> Path:
    """The conversation's scratch directory, created (0700) if needed (where the executor mounts its
    volume: this only names the place)."""
    path = (root or scratch_root()) / check_conversation(conversation)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
