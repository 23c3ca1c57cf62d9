"""One started sandbox host, seen from the worker: start it, wait until it is warm, give it one task.

Each host runs in a cgroup of its own (``cgroup.CallGroup``), joined before bubblewrap starts, so the
call's memory, process count and CPU share are bounded for all its processes together; a call that the
kernel stops at its memory limit is killed as a whole and answered ``out_of_memory``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

from workers.errors import SandboxError, SandboxStartError
from workers.sandbox.cgroup import CallGroup, CallGroups, dispose
from workers.sandbox.launch import SECCOMP_FD, HostSpec, Launch, build
from workers.sandbox.policy import Limits, Mechanism, Outcome

START_TIMEOUT = 10.0  # a cold host on a loaded machine may take seconds
_GRACE = 2.0  # the host enforces the wall-clock limit itself; this covers a host that cannot answer
_LINE_LIMIT = 64 * 1024 * 1024
# Joins each cgroup named before the command ($0 says how many), then becomes the command.
_JOIN = (
    'n=$0; while [ "$n" -gt 0 ]; do echo $$ > "$1/cgroup.procs" || exit 125; shift; n=$((n-1)); done; '
    'exec "$@"'
)


class Host:
    """A host process waiting for its one task."""

    def __init__(self, spec: HostSpec, process: asyncio.subprocess.Process, group: CallGroup | None) -> None:
        self.spec = spec
        self.process = process
        self.group = group
        self.started = time.monotonic()
        self.reaper: asyncio.Future[None] | None = None
        self.out_of_memory = False

    @classmethod
    async def start(
        cls, spec: HostSpec, mechanism: Mechanism, groups: CallGroups, timeout: float = START_TIMEOUT
    ) -> Host:
        launch = build(spec, mechanism)
        group = _group(groups)
        try:
            process = await _spawn(launch, group)
        except BaseException:
            await dispose(group)
            raise
        host = cls(spec, process, group)
        try:
            if group is not None:
                group.watch_oom(asyncio.get_running_loop().add_reader, host._on_oom)
            await asyncio.wait_for(host._await_ready(), timeout)
        except BaseException as exc:  # a timeout, a failed start, or the pool closing while it started
            await host.kill()
            if isinstance(exc, TimeoutError):
                raise SandboxStartError(f"sandbox host was not ready within {timeout} s") from exc
            raise
        return host

    def _on_oom(self) -> None:
        """The kernel stopped the call at its memory limit (cgroup v1 kills only one process): end it all."""
        self.out_of_memory = True
        if self.group is not None:
            self.group.unwatch(asyncio.get_running_loop().remove_reader)
            self.group.kill_all()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    async def _await_ready(self) -> None:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if line != b"ready\n":
            stderr = b""
            if self.process.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    stderr = await asyncio.wait_for(self.process.stderr.read(4096), 1.0)
            raise SandboxStartError(f"sandbox host did not start: {stderr.decode(errors='replace').strip()}")

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def run(
        self, target: str, arguments: dict[str, Any], limits: Limits, egress: tuple[str, ...]
    ) -> Outcome:
        """Send the task, read the answer, and return once every process of the sandbox is gone."""
        if self.group is not None:
            try:
                self.group.apply(limits)
                self.group.share_cpu(limits.cpus)
            except OSError as exc:
                await self.kill()
                raise SandboxError(f"cannot set the call's cgroup limits: {exc}") from exc
        request = {"target": target, "arguments": arguments, "limits": limits.to_json(), "egress": egress}
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), limits.wall_seconds + _GRACE)
        except TimeoutError:
            await self.kill()
            return Outcome(error_type="timeout", error_message=f"the call ran past {limits.wall_seconds} s")
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: a line past the stream's limit
            await self.kill()
            return Outcome(error_type="crashed", error_message=f"the sandbox failed: {exc}")
        # The host killed every process of the task before it answered; only the host and bwrap's init
        # are left, and they exit on their own: reap them without making the caller wait.
        self.reaper = asyncio.ensure_future(self.finish())
        if self.out_of_memory or (self.group is not None and self.group.oom_kills()):
            return _out_of_memory(limits)
        return _outcome(line)

    async def finish(self) -> None:
        try:
            await asyncio.wait_for(self.process.wait(), _GRACE)
        except TimeoutError:
            await self.kill()
        await dispose(self.group)

    async def kill(self) -> None:
        if self.group is not None:
            # Under Landlock and the plain process there is no PID namespace to die with bwrap: the
            # cgroup is what finds every process of the call.
            self.group.kill_all()
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        # Killed early in its start, bwrap may not yet have tied its sandbox to its own life; the host
        # inside then still waits for a task. End of input tells it to exit, which ends the sandbox.
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), _GRACE)
        await dispose(self.group)


def _group(groups: CallGroups) -> CallGroup | None:
    try:
        group = groups.create()
        if group is not None:
            group.apply(Limits())  # the defaults until the call's own limits arrive with it
    except OSError as exc:
        raise SandboxStartError(f"cannot create the sandbox's cgroup: {exc}") from exc
    return group


def _out_of_memory(limits: Limits) -> Outcome:
    mib = limits.memory_bytes // (1024 * 1024)
    message = (
        f"the call's processes together passed its memory limit of {mib} MiB and the call was killed; "
        "use less memory (fewer or smaller processes, smaller data)"
    )
    return Outcome(error_type="out_of_memory", error_message=message)


async def _spawn(launch: Launch, group: CallGroup | None) -> asyncio.subprocess.Process:
    argv = launch.argv
    if group is not None:
        # Join the cgroups before exec, so that bwrap and everything under it is counted.
        paths = [str(path) for path in group.paths()]
        argv = ["/bin/sh", "-c", _JOIN, str(len(paths)), *paths, *argv]
    pass_fds: tuple[int, ...] = ()
    read_end = -1
    if launch.seccomp_program is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, launch.seccomp_program)  # a few KiB: fits the pipe's buffer
        os.close(write_end)
        pass_fds = (read_end,)
        argv = [str(read_end) if arg == SECCOMP_FD else arg for arg in argv]
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
            pass_fds=pass_fds,
            start_new_session=True,
            limit=_LINE_LIMIT,
        )
    except OSError as exc:
        raise SandboxStartError(f"cannot start the sandbox: {exc}") from exc
    finally:
        if read_end >= 0:
            os.close(read_end)


def _outcome(line: bytes) -> Outcome:
    if not line:
        return Outcome(error_type="crashed", error_message="the sandbox exited without an answer")
    try:
        answer = json.loads(line)
    except ValueError:
        return Outcome(error_type="crashed", error_message="the sandbox sent an unreadable answer")
    error = answer.get("error")
    if error:
        return Outcome(answer.get("content"), str(error.get("type")), str(error.get("message")))
    return Outcome(answer.get("content"))
