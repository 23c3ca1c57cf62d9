"""Per-call resource limits through cgroups: memory, process count and CPU share for everything a call runs.

Resource limits (``setrlimit``) bound one process at a time, so a call that forks escapes them: three
processes of 300 MiB each stay under a per-process limit of 512 MiB. Each sandbox host (and so each call,
since a host serves one call) therefore gets a cgroup of its own, joined before bubblewrap starts, with

- ``memory``: the call's ``memory_bytes`` for all its processes together, swap included. Under cgroup v2
  ``memory.oom.group`` makes the kernel kill the whole call at once; under v1 the kernel kills one process
  and the worker, woken by an eventfd on ``memory.oom_control``, kills the rest (``watch_oom``).
- ``pids``: ``processes`` (plus the host and bubblewrap's init): ``RLIMIT_NPROC`` has no effect for root.
- ``cpu``: a quota of ``cpus`` CPUs (``cpu.max`` or the v1 CFS quota), so that one call cannot take a
  whole machine.

Groups are made below the worker's own cgroup in each hierarchy (``<own>/caduceus/<worker pid>/<call>``),
v2 where a controller is available there, else the v1 hierarchy that has it. Where a controller cannot be
used, ``problems`` says why; the executor then refuses untrusted tools and ``caduceus doctor`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.sandbox.policy import Limits

CONTROLLERS = ("memory", "pids", "cpu")
REQUIRED = ("memory", "pids")  # without these a call is not bounded as a whole
_CPU_PERIOD_US = 100_000
_KILL_ROUNDS = 200
_REMOVE_TRIES = 200  # times 5 ms: how long a finished call's cgroup may take to empty


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's call groups are made."""

    controller: str
    base: Path
    version: int


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _own_groups() -> dict[str, str]:
    """This process's cgroup in each hierarchy: ``{"memory": "/a/b", ..., "": "/v2/path"}``."""
    groups: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """The cgroup mounts: (fstype, mount point, root within the hierarchy, super options)."""
    found = []
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) >= 5 and len(extra) >= 3 and extra[0] in ("cgroup", "cgroup2"):
            found.append((extra[0], Path(parts[4]), parts[3], set(extra[2].split(","))))
    return found


def _inside(mount: Path, root: str, path: str) -> Path:
    relative = path[len(root) :] if root != "/" and path.startswith(root) else path
    return mount / relative.lstrip("/")


def discover() -> tuple[dict[str, Hierarchy], dict[str, str]]:
    """Where each controller's groups go, and why the missing ones are missing."""
    own = _own_groups()
    found: dict[str, Hierarchy] = {}
    problems: dict[str, str] = {}
    mounts = _mounts()
    v2 = next((m for m in mounts if m[0] == "cgroup2"), None)
    if v2 is not None and "" in own:
        home = _inside(v2[1], v2[2], own[""])
        available = set(_read(home / "cgroup.controllers").split())
        wanted = [c for c in CONTROLLERS if c in available]
        if wanted:
            problem = _prepare_v2(home, wanted)
            for controller in wanted:
                if problem is None:
                    found[controller] = Hierarchy(controller, home / "caduceus" / str(os.getpid()), 2)
                else:
                    problems[controller] = problem
    for controller in CONTROLLERS:
        if controller in found:
            continue
        mount = next((m for m in mounts if m[0] == "cgroup" and controller in m[3]), None)
        if mount is None or controller not in own:
            problems.setdefault(controller, f"no {controller} controller is mounted here")
            continue
        base = _inside(mount[1], mount[2], own[controller]) / "caduceus"
        problem = _prepare_v1(base)
        if problem is None:
            found[controller] = Hierarchy(controller, base / str(os.getpid()), 1)
            problems.pop(controller, None)
        else:
            problems[controller] = problem
    return found, problems


def _prepare_v2(home: Path, controllers: list[str]) -> str | None:
    """Delegate ``controllers`` down to ``home/caduceus/<pid>``; cgroup v2 refuses when ``home`` holds
    processes (no internal processes), unless it is the root."""
    enable = " ".join(f"+{c}" for c in controllers)
    own = home / "caduceus" / str(os.getpid())
    try:
        _write(home / "cgroup.subtree_control", enable)
        for level in (own.parent, own):
            level.mkdir(exist_ok=True)
            _write(level / "cgroup.subtree_control", enable)
    except OSError as exc:
        return (
            f"cgroup v2 at {home}: cannot delegate {enable} ({exc.strerror}); "
            "run the worker in a cgroup of its own"
        )
    return None


def _prepare_v1(base: Path) -> str | None:
    try:
        base.mkdir(exist_ok=True)
        (base / str(os.getpid())).mkdir(exist_ok=True)
    except OSError as exc:
        return f"cannot create cgroups under {base}: {exc.strerror}"
    return None


def _remove_tree(path: Path) -> None:
    """Remove a group and its (empty) children, deepest first."""
    for child in sorted((p for p in path.glob("*") if p.is_dir()), reverse=True):
        _remove_tree(child)
    with contextlib.suppress(OSError):
        path.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CallGroups:
    """Makes one cgroup per sandbox host in every hierarchy that has a needed controller."""

    def __init__(self) -> None:
        self.hierarchies, self.problems = discover()
        self._sweep_dead_workers()

    @property
    def available(self) -> bool:
        return all(c in self.hierarchies for c in REQUIRED)

    def describe(self) -> str:
        """One line for ``caduceus doctor``."""
        parts = [f"{h.controller} (v{h.version}, {h.base.parent})" for h in self.hierarchies.values()]
        missing = [f"{c}: {p}" for c, p in self.problems.items()]
        return "; ".join(parts + [f"MISSING {m}" for m in missing]) or "none"

    def create(self) -> CallGroup | None:
        """A fresh group, or ``None`` when no hierarchy can be used (``OSError`` if making one fails)."""
        if not self.hierarchies:
            return None
        name = uuid.uuid4().hex[:16]
        dirs: dict[str, Path] = {}
        try:
            for controller, hierarchy in self.hierarchies.items():
                path = hierarchy.base / name
                if path not in dirs.values():
                    path.mkdir()
                dirs[controller] = path
        except OSError:
            CallGroup(dirs, {}).remove()
            raise
        versions = {c: h.version for c, h in self.hierarchies.items()}
        return CallGroup(dirs, versions)

    def _sweep_dead_workers(self) -> None:
        """Remove what workers that died left behind (their groups are empty once their hosts are gone)."""
        for hierarchy in self.hierarchies.values():
            for sibling in hierarchy.base.parent.glob("*"):
                if (
                    sibling.name.isdigit()
                    and int(sibling.name) != os.getpid()
                    and not _alive(int(sibling.name))
                ):
                    _remove_tree(sibling)


class CallGroup:
    """The cgroup(s) of one sandbox host: one directory per hierarchy (a single one under cgroup v2)."""

    def __init__(self, dirs: dict[str, Path], versions: dict[str, int]) -> None:
        self.dirs = dirs
        self.versions = versions
        self.applied: Limits | None = None
        self._oom_fd = -1

    def paths(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def apply(self, limits: Limits) -> None:
        """Set the memory and process limits (``OSError`` if the kernel refuses one: a call never runs
        without them). Written once at the host's start and again only for a call with other limits."""
        if limits == self.applied:
            return
        for controller, path in self.dirs.items():
            if controller == "memory":
                _memory_v2(path, limits) if self.versions[controller] == 2 else _memory_v1(path, limits)
            elif controller == "pids":
                _write(path / "pids.max", str(limits.processes + 2))  # the host and bwrap's init count too
        self.applied = limits

    def share_cpu(self, cpus: float) -> None:
        """Set the CPU quota, when the call starts: the host's own start is not held to it, and writing
        the quota gives the call a fresh budget (a start just before would otherwise throttle it)."""
        path = self.dirs.get("cpu")
        if path is None:
            return
        quota = max(1000, int(cpus * _CPU_PERIOD_US))
        if self.versions["cpu"] == 2:
            _write(path / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
        else:  # a new group's period is the kernel's default, 100 ms
            _write(path / "cpu.cfs_quota_us", str(quota))

    def oom_kills(self) -> int:
        """How many processes of the call the kernel killed for passing the memory limit."""
        path = self.dirs.get("memory")
        if path is None:
            return 0
        name = "memory.events" if self.versions["memory"] == 2 else "memory.oom_control"
        for line in _read(path / name).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def watch_oom(
        self, add_reader: Callable[[int, Callable[[], None]], None], wake: Callable[[], None]
    ) -> None:
        """Under cgroup v1, call ``wake`` when the kernel hits the memory limit (v2 kills the group)."""
        path = self.dirs.get("memory")
        if path is None or self.versions["memory"] != 1:
            return
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        control = os.open(path / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _write(path / "cgroup.event_control", f"{event} {control}")
        except OSError:
            os.close(event)
            raise
        finally:
            os.close(control)
        self._oom_fd = event
        add_reader(event, wake)

    def unwatch(self, remove_reader: Callable[[int], object]) -> None:
        if self._oom_fd >= 0:
            remove_reader(self._oom_fd)
            os.close(self._oom_fd)
            self._oom_fd = -1

    def processes(self) -> list[int]:
        """The call's processes: those of one of its groups, since every process of a call is in each
        (the host joins them all before anything forks, and a child stays where its parent is)."""
        path = self.paths()[0]
        return sorted(int(pid) for pid in _read(path / "cgroup.procs").split())

    def kill_all(self) -> None:
        """SIGKILL every process of the call, until none is left (a fork bomb keeps forking)."""
        for controller, path in self.dirs.items():
            if self.versions.get(controller) == 2:
                with contextlib.suppress(OSError):
                    _write(path / "cgroup.kill", "1")  # Linux 5.14 and later: all at once
                break  # one group holds every controller under v2
        for _ in range(_KILL_ROUNDS):
            victims = self.processes()
            if not victims:
                return
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def empty(self) -> bool:
        return not self.processes()

    def remove(self) -> bool:
        """Remove the group's directories; ``False`` while a process (even a dying one) is still in it."""
        removed = True
        for path in self.paths():
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                removed = False
        return removed


async def dispose(group: CallGroup | None) -> None:
    """Kill what is left of a finished call and remove its cgroup (its processes take the kernel a
    moment to leave it)."""
    if group is None:
        return
    group.unwatch(asyncio.get_running_loop().remove_reader)
    for _ in range(_REMOVE_TRIES):
        group.kill_all()
        if group.remove():
            return
        await asyncio.sleep(0.005)


def _memory_v2(path: Path, limits: Limits) -> None:
    _write(path / "memory.max", str(limits.memory_bytes))
    with contextlib.suppress(FileNotFoundError):  # no swap accounting on this kernel: no swap to limit
        _write(path / "memory.swap.max", "0")
    _write(path / "memory.oom.group", "1")


def _memory_v1(path: Path, limits: Limits) -> None:
    # memsw (memory + swap) must never be below the memory limit, whichever way the limit moves.
    memsw = path / "memory.memsw.limit_in_bytes"
    has_memsw = memsw.exists()
    if has_memsw:
        _write(memsw, "-1")
    _write(path / "memory.limit_in_bytes", str(limits.memory_bytes))
    if has_memsw:
        _write(memsw, str(limits.memory_bytes))
