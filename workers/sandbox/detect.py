"""Which isolation works on this machine, and why the stronger ones do not.

Probed once per process by actually starting each mechanism with a trivial command, strongest first,
because a container runtime may block user namespaces or Landlock in ways no file under /proc reveals.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass, field

from workers.sandbox import landlock, seccomp
from workers.sandbox.cgroup import REQUIRED, CallGroups
from workers.sandbox.launch import bwrap_binary
from workers.sandbox.policy import Mechanism


@dataclass(frozen=True)
class Detection:
    mechanism: Mechanism
    reasons: list[str] = field(default_factory=list)
    call_limits: str = ""  # where each call's cgroup limits are enforced, and which are missing
    unbounded: list[str] = field(default_factory=list)  # required cgroup controllers that are missing
    signals: str = ""  # what keeps a call from signalling processes outside it


def _signals(mechanism: Mechanism) -> str:
    if mechanism == "bubblewrap":
        return "a PID namespace per call (a call sees and signals only its own processes)"
    if mechanism == "process":
        return "NOT confined (no isolation here; tools marked untrusted are refused)"
    abi = landlock.abi_version()
    if landlock.scopes_signals(abi):
        return f"scoped by Landlock ABI {abi} (a call signals only its own processes)"
    return f"Landlock ABI {abi} cannot scope them: seccomp lets a call signal only itself"


@functools.cache
def detect() -> Detection:
    reasons: list[str] = []
    mechanism = _mechanism(reasons)
    groups = CallGroups()
    unbounded = [
        f"{c}: {groups.problems.get(c, 'unavailable')}" for c in REQUIRED if c not in groups.hierarchies
    ]
    return Detection(mechanism, reasons, groups.describe(), unbounded, _signals(mechanism))


def _mechanism(reasons: list[str]) -> Mechanism:
    problem = _bwrap_problem()
    if problem is None:
        reasons.append("bubblewrap: user, pid, net, mount, ipc, uts namespaces + seccomp work")
        fallback = landlock.problem()
        reasons.append(f"fallback: landlock ABI {landlock.abi_version()}" if fallback is None else fallback)
        return "bubblewrap"
    reasons.append(f"bubblewrap unavailable: {problem}")
    problem = landlock.problem() or (
        None if seccomp.supported() else "no seccomp filter for this architecture"
    )
    if problem is None:
        reasons.append(f"landlock ABI {landlock.abi_version()} + seccomp work")
        return "landlock"
    reasons.append(f"landlock unavailable: {problem}")
    reasons.append("no isolation: tools marked untrusted are refused")
    return "process"


def _bwrap_problem() -> str | None:
    try:
        binary = bwrap_binary()
    except Exception as exc:
        return f"no bwrap binary ({exc})"
    argv = [binary, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--", "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0:
        return done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
    return None
