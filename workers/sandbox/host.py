"""One started sandbox host, seen from the worker: start it, wait until it is warm, give it one task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from workers.errors import SandboxStartError
from workers.sandbox.cgroup import PidsGroups
from workers.sandbox.launch import SECCOMP_FD, HostSpec, Launch, build
from workers.sandbox.policy import Limits, Mechanism, Outcome

_START_TIMEOUT = 10.0
_GRACE = 2.0  # the host enforces the wall-clock limit itself; this covers a host that cannot answer
_LINE_LIMIT = 64 * 1024 * 1024


class Host:
    """A host process waiting for its one task."""

    def __init__(self, spec: HostSpec, process: asyncio.subprocess.Process, group: Path | None) -> None:
        self.spec = spec
        self.process = process
        self.group = group
        self.started = time.monotonic()
        self.reaper: asyncio.Future[None] | None = None

    @classmethod
    async def start(cls, spec: HostSpec, mechanism: Mechanism, groups: PidsGroups) -> Host:
        launch = build(spec, mechanism)
        group = groups.create()
        process = await _spawn(launch, group)
        host = cls(spec, process, group)
        try:
            await asyncio.wait_for(host._await_ready(), _START_TIMEOUT)
        except BaseException:  # a timeout, a failed start, or the pool closing while it started
            await host.kill()
            raise
        return host

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
        PidsGroups.set_max(self.group, limits.processes + 2)  # the host and bwrap's init count too
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
        return _outcome(line)

    async def finish(self) -> None:
        try:
            await asyncio.wait_for(self.process.wait(), _GRACE)
        except TimeoutError:
            await self.kill()
        PidsGroups.remove(self.group)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        # Killed early in its start, bwrap may not yet have tied its sandbox to its own life; the host
        # inside then still waits for a task. End of input tells it to exit, which ends the sandbox.
        if self.process.stdin is not None:
            self.process.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), _GRACE)
        PidsGroups.remove(self.group)


async def _spawn(launch: Launch, group: Path | None) -> asyncio.subprocess.Process:
    argv = launch.argv
    if group is not None:
        # Join the pids cgroup before exec, so that bwrap and everything under it is counted.
        argv = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group), *argv]
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
