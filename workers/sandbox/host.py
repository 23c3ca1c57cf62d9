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
from pathlib import Path
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
    """A host waiting for its one task: started for it (``StartedHost``) or forked from a template
    (``template.ForkedHost``). ``run`` sends the task and reads the answer; the subclass says how the
    bytes travel and how the host's processes are killed and waited for."""

    def __init__(self, spec: HostSpec, group: CallGroup | None) -> None:
        self.spec = spec
        self.group = group
        self.started = time.monotonic()
        self.reaper: asyncio.Future[None] | None = None
        self.out_of_memory = False

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    async def _send(self, request: bytes, scratch: Path | None) -> None:
        raise NotImplementedError

    def _scratch_path(self, scratch: Path | None) -> str | None:
        """Where the task finds its scratch directory, when the request must say (a host not bound yet
        that sees the worker's paths)."""
        return None

    async def _answer(self) -> bytes:
        raise NotImplementedError

    async def _exit(self) -> None:
        """Wait until the host's process has exited."""
        raise NotImplementedError

    def _signal_kill(self) -> None:
        raise NotImplementedError

    def _on_oom(self) -> None:
        """The kernel stopped the call at its memory limit (cgroup v1 kills only one process): end it all."""
        self.out_of_memory = True
        if self.group is not None:
            self.group.unwatch(asyncio.get_running_loop().remove_reader)
            self.group.kill_all()
        self._signal_kill()

    async def run(
        self,
        target: str,
        arguments: dict[str, Any],
        limits: Limits,
        egress: tuple[str, ...],
        scratch: Path | None = None,
    ) -> Outcome:
        """Send the task, read the answer, and return once every process of the sandbox is gone.
        ``scratch``: the conversation's scratch directory, for a host not bound to one yet."""
        if self.group is not None:
            try:
                self.group.apply(limits)
                self.group.share_cpu(limits.cpus)
            except OSError as exc:
                await self.kill()
                raise SandboxError(f"cannot set the call's cgroup limits: {exc}") from exc
        request = {"target": target, "arguments": arguments, "limits": limits.to_json(), "egress": egress}
        where = self._scratch_path(scratch)
        if where is not None:
            request["scratch"] = where
        try:
            await self._send(json.dumps(request).encode() + b"\n", scratch)
            line = await asyncio.wait_for(self._answer(), limits.wall_seconds + _GRACE)
        except TimeoutError:
            await self.kill()
            return Outcome(error_type="timeout", error_message=f"the call ran past {limits.wall_seconds} s")
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: a line past the stream's limit
            await self.kill()
            return Outcome(error_type="crashed", error_message=f"the sandbox failed: {exc}")
        # The host killed every process of the task before it answered; only the host (and under bwrap
        # its init) is left, and it exits on its own: reap it without making the caller wait.
        self.reaper = asyncio.ensure_future(self.finish())
        if self.out_of_memory or (self.group is not None and self.group.oom_kills()):
            return _out_of_memory(limits)
        return _outcome(line)

    async def finish(self) -> None:
        try:
            await asyncio.wait_for(self._exit(), _GRACE)
        except TimeoutError:
            await self.kill()
        await self._release()

    async def kill(self) -> None:
        if self.group is not None:
            # Under Landlock and the plain process there is no PID namespace to die with the host: the
            # cgroup is what finds every process of the call.
            self.group.kill_all()
        self._signal_kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exit(), _GRACE)
        await self._release()

    async def _release(self) -> None:
        await dispose(self.group)


class StartedHost(Host):
    """A host process started for one conversation's scratch directory (bound at its start)."""

    def __init__(self, spec: HostSpec, process: asyncio.subprocess.Process, group: CallGroup | None) -> None:
        super().__init__(spec, group)
        self.process = process

    @classmethod
    async def start(
        cls, spec: HostSpec, mechanism: Mechanism, groups: CallGroups, timeout: float = START_TIMEOUT
    ) -> StartedHost:
        launch = build(spec, mechanism)
        group = new_group(groups)
        try:
            process = await spawn(launch, group)
        except BaseException:
            await dispose(group)
            raise
        host = cls(spec, process, group)
        try:
            if group is not None:
                group.watch_oom(asyncio.get_running_loop().add_reader, host._on_oom)
            await asyncio.wait_for(await_ready(process), timeout)
        except BaseException as exc:  # a timeout, a failed start, or the pool closing while it started
            await host.kill()
            if isinstance(exc, TimeoutError):
                raise SandboxStartError(f"sandbox host was not ready within {timeout} s") from exc
            raise
        return host

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def tree(self) -> set[int]:
        """The host's process (bwrap, under bubblewrap) and every process under it."""
        found, frontier = set(), {self.process.pid}
        while frontier:
            found |= frontier
            frontier = {child for pid in frontier for child in children(pid)} - found
        return found

    async def _send(self, request: bytes, scratch: Path | None) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(request)
        await self.process.stdin.drain()

    async def _answer(self) -> bytes:
        assert self.process.stdout is not None
        return await self.process.stdout.readline()

    async def _exit(self) -> None:
        await self.process.wait()

    def _signal_kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        # Killed early in its start, bwrap may not yet have tied its sandbox to its own life; the host
        # inside then still waits for a task. End of input tells it to exit, which ends the sandbox.
        if self.process.stdin is not None:
            self.process.stdin.close()


async def await_ready(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if line != b"ready\n":
        stderr = b""
        if process.stderr is not None:
            with contextlib.suppress(TimeoutError):
                stderr = await asyncio.wait_for(process.stderr.read(4096), 1.0)
        raise SandboxStartError(f"sandbox host did not start: {stderr.decode(errors='replace').strip()}")


def new_group(groups: CallGroups) -> CallGroup | None:
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


async def spawn(
    launch: Launch,
    group: CallGroup | None,
    keep: tuple[int, ...] = (),
    *,
    stdio: tuple[int, int, int] = (asyncio.subprocess.PIPE,) * 3,
) -> asyncio.subprocess.Process:
    """Start a host (or a template) in ``group``, handing it the descriptors ``keep``; ``stdio``: its
    stdin, stdout and stderr (pipes to this process unless given)."""
    argv = launch.argv
    if group is not None:
        # Join the cgroups before exec, so that bwrap and everything under it is counted.
        paths = [str(path) for path in group.paths()]
        argv = ["/bin/sh", "-c", _JOIN, str(len(paths)), *paths, *argv]
    pass_fds: tuple[int, ...] = keep
    read_end = -1
    if launch.seccomp_program is not None:
        read_end, write_end = os.pipe()
        os.write(write_end, launch.seccomp_program)  # a few KiB: fits the pipe's buffer
        os.close(write_end)
        pass_fds = (*keep, read_end)
        argv = [str(read_end) if arg == SECCOMP_FD else arg for arg in argv]
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
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


def children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as found:
            return {int(child) for child in found.read().split()}
    except OSError:
        return set()
