"""Sandbox templates, seen from the worker: start one per kind of host, and fork hosts from it.

A template (``forkserver`` inside) is a sandbox like any host's, with the tools imported, that forks a
host whenever asked: a fresh single-use host costs a fork and its namespaces, milliseconds, instead of a
sandbox and an interpreter start. Its hosts are not tied to a conversation: each is bound to one at its
first (and only) task, by the detached mount of that conversation's scratch directory that travels with
the task (``nest.detach``; under Landlock and the plain process, by the path in the request).

A forked host is not the worker's child: the worker knows it by the pid the kernel attaches to its first
message (``SO_PASSCRED``), holds a pidfd to it (to see it exit and to kill it without a pid race), and
moves it into its call's cgroup before its task's process is forked, so the whole call is bounded there.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import logging
import os
import select
import signal
import socket
import struct
from pathlib import Path

from workers.errors import SandboxStartError
from workers.sandbox import nest
from workers.sandbox.cgroup import CallGroup, CallGroups, dispose
from workers.sandbox.host import START_TIMEOUT, Host, children, new_group, spawn
from workers.sandbox.launch import HostSpec, build
from workers.sandbox.policy import Mechanism

log = logging.getLogger(__name__)
_UCRED = struct.Struct("iII")  # pid, uid, gid
# A reply carries one descriptor, and the template's credentials (the control socket asks for them).
_REPLY_ANCILLARY = socket.CMSG_SPACE(array.array("i").itemsize) + socket.CMSG_SPACE(_UCRED.size)
_READ_CHUNK = 1 << 16
_LINE_LIMIT = 64 * 1024 * 1024


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _recvmsg(
    sock: socket.socket, size: int, ancillary: int
) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    while True:
        try:
            data, found, _, _ = sock.recvmsg(size, ancillary)
            return data, found
        except BlockingIOError:
            await _readable(sock.fileno())


def _exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (poll: a worker's descriptors pass 1024)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


class _Lines:
    """The read end of a template's stderr: each line it (or a host of it) writes goes to the log."""

    def __init__(self) -> None:
        self._read, self.write_end = os.pipe()
        os.set_blocking(self._read, False)
        self._buffer = b""
        self.last = "it exited"  # the last line, for a start that failed

    def started(self) -> None:
        """The template has its copy of the write end: watch the read end."""
        os.close(self.write_end)
        asyncio.get_running_loop().add_reader(self._read, self._drain)

    def _drain(self) -> None:
        try:
            chunk = os.read(self._read, 65536)
        except BlockingIOError:
            return
        if not chunk:  # every writer is gone
            self.close()
            return
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            self.last = line.decode(errors="replace").rstrip()
            log.warning("sandbox template: %s", self.last)

    def close(self) -> None:
        if self._read >= 0:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._read)
            os.close(self._read)
            self._read = -1


class Template:
    """A started template of one kind of host (``spec``: network, preloaded tools; no scratch)."""

    def __init__(
        self, spec: HostSpec, process: asyncio.subprocess.Process, control: socket.socket, errors: _Lines
    ) -> None:
        self.spec = spec
        self.process = process
        self._control = control
        self._errors = errors
        # Requests are pipelined: the template answers them in order, one reply (a socket) each.
        self._waiting: collections.deque[asyncio.Future[socket.socket]] = collections.deque()
        self.pids: set[int] = {process.pid}  # its own processes (bwrap's among them), never a host's

    @classmethod
    async def start(cls, spec: HostSpec, mechanism: Mechanism, timeout: float = START_TIMEOUT) -> Template:
        """Start the template; it is ready once it sends its first message. Its stderr (and its hosts')
        goes to the log through a pipe of our own, not asyncio's: a subprocess's ``wait()`` waits for its
        pipes to close too, and a host holding the template's stderr would make it wait for that host."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        errors = _Lines()
        launch = build(spec, mechanism, control_fd=theirs.fileno())
        quiet = asyncio.subprocess.DEVNULL
        try:
            process = await spawn(launch, None, (theirs.fileno(),), stdio=(quiet, quiet, errors.write_end))
        except BaseException:
            ours.close()
            os.close(errors.write_end)
            errors.close()
            raise
        finally:
            theirs.close()
        errors.started()
        ours.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                own = await _sender(ours)
        except BaseException as exc:
            ours.close()
            errors.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise SandboxStartError(f"sandbox template was not ready within {timeout} s") from exc
            raise SandboxStartError(f"sandbox template did not start: {errors.last}") from exc
        template = cls(spec, process, ours, errors)
        template.pids = {process.pid, own, _parent(own)} - {0}
        return template

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def fork(
        self, mechanism: Mechanism, groups: CallGroups, timeout: float = START_TIMEOUT
    ) -> ForkedHost:
        """A new host, placed in a cgroup of its own and ready for its task."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[socket.socket] = loop.create_future()
        if not self._waiting:
            loop.add_reader(self._control.fileno(), self._replies)
        self._waiting.append(reply)
        try:
            self._control.send(b"f")  # a one-byte datagram: it fits, or the template is gone
        except OSError as exc:
            self._fail(SandboxStartError(f"the sandbox template is gone: {exc}"))
        try:
            async with asyncio.timeout(timeout):
                channel = await reply
                return await ForkedHost.prepare(self.spec, mechanism, channel, groups)
        except TimeoutError as exc:
            raise SandboxStartError(f"sandbox host was not ready within {timeout} s") from exc

    def _replies(self) -> None:
        """The control socket is readable: each reply goes to the oldest request still waiting."""
        while self._waiting:
            try:
                data, ancillary, _, _ = self._control.recvmsg(16, _REPLY_ANCILLARY)
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(SandboxStartError(f"the sandbox template is gone: {exc}"))
                return
            fds = _fds(ancillary)
            if not data or not fds:
                status = self.process.returncode
                self._fail(SandboxStartError(f"the sandbox template stopped (exit status {status})"))
                return
            for extra in fds[1:]:
                os.close(extra)
            channel = socket.socket(fileno=fds[0])
            reply = self._waiting.popleft()
            if reply.done():  # its caller gave up waiting
                channel.close()
            else:
                reply.set_result(channel)
        asyncio.get_running_loop().remove_reader(self._control.fileno())

    def _fail(self, error: SandboxStartError) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._control.fileno())
        while self._waiting:
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(error)

    async def close(self) -> None:
        self._fail(SandboxStartError("the sandbox pool is closing"))
        self._control.close()  # the template exits at end of input; its warm hosts go with their sockets
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 2.0)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        self._errors.close()


class ForkedHost(Host):
    """A host forked from a template, talked to over its socket and known by a pidfd."""

    def __init__(
        self,
        spec: HostSpec,
        mechanism: Mechanism,
        channel: socket.socket,
        pidfd: int,
        group: CallGroup | None,
    ) -> None:
        super().__init__(spec, group)
        self.mechanism = mechanism
        self.channel = channel
        self.pidfd = pidfd
        self.pid = 0
        self._buffer = b""

    def pids(self) -> set[int]:
        """The host's processes while it waits: itself and its task's process."""
        return {self.pid, *children(self.pid)} if self.alive else set()

    @classmethod
    async def prepare(
        cls, spec: HostSpec, mechanism: Mechanism, channel: socket.socket, groups: CallGroups
    ) -> ForkedHost:
        channel.setblocking(False)
        try:
            pid = await _hello(channel)
            pidfd = os.pidfd_open(pid)
        except BaseException:
            channel.close()
            raise
        host = cls(spec, mechanism, channel, pidfd, None)
        host.pid = pid
        try:
            # In a thread: moving a process between cgroups waits for the kernel (an RCU grace period
            # per hierarchy, about 0.5 ms each here), which the event loop should not.
            host.group = await asyncio.to_thread(new_group, groups)
            if host.group is not None:
                await asyncio.to_thread(_place, host.group, pid)
                host.group.watch_oom(asyncio.get_running_loop().add_reader, host._on_oom)
            await asyncio.get_running_loop().sock_sendall(channel, b"placed\n")
            if await host._line() != b"ready\n":
                raise SandboxStartError("the sandbox host stopped before it was ready")
        except BaseException:
            await host.kill()
            raise
        return host

    @property
    def alive(self) -> bool:
        return self.pidfd >= 0 and not _exited(self.pidfd)

    def _scratch_path(self, scratch: Path | None) -> str | None:
        # Under bubblewrap the scratch is mounted at the host's /scratch, where its config points.
        return None if self.mechanism == "bubblewrap" or scratch is None else str(scratch)

    async def _send(self, request: bytes, scratch: Path | None) -> None:
        fds: list[int] = []
        if self.mechanism == "bubblewrap":
            assert scratch is not None
            fds = [nest.detach(str(scratch))]
        try:
            # One byte, with the scratch mount attached (ancillary data never merges with other bytes).
            socket.send_fds(self.channel, [b"B"], fds)
        finally:
            for fd in fds:
                os.close(fd)  # the host holds its own reference now
        await asyncio.get_running_loop().sock_sendall(self.channel, request)

    async def _answer(self) -> bytes:
        return await self._line()

    async def _line(self) -> bytes:
        loop = asyncio.get_running_loop()
        while b"\n" not in self._buffer:
            if len(self._buffer) > _LINE_LIMIT:
                raise ValueError("the sandbox's answer passed the line limit")
            chunk = await loop.sock_recv(self.channel, _READ_CHUNK)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    async def _exit(self) -> None:
        if self.pidfd >= 0 and not _exited(self.pidfd):
            await _readable(self.pidfd)

    def _signal_kill(self) -> None:
        if self.pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    async def _release(self) -> None:
        self.channel.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        await dispose(self.group)


def _place(group: CallGroup, pid: int) -> None:
    """Move the host ``pid`` into its call's cgroups (before it forks its task's process)."""
    try:
        for path in group.paths():
            with open(path / "cgroup.procs", "w") as procs:
                procs.write(str(pid))
    except OSError as exc:
        raise SandboxStartError(f"cannot move the sandbox host into its cgroup: {exc}") from exc


async def _hello(channel: socket.socket) -> int:
    """The host's first line, and its pid as this process sees it (attached by the kernel)."""
    data, ancillary = await _recvmsg(channel, 4096, socket.CMSG_SPACE(_UCRED.size))
    if not data.startswith(b"hello"):
        message = data.decode(errors="replace").strip() or "it exited"
        raise SandboxStartError(f"sandbox host did not start: {message}")
    return _pid(ancillary)


async def _sender(control: socket.socket) -> int:
    """The pid of the template, from the message it sends once ready."""
    _, ancillary = await _recvmsg(control, 16, socket.CMSG_SPACE(_UCRED.size))
    return _pid(ancillary)


def _pid(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_UCRED.unpack(payload[: _UCRED.size])[0])
    raise SandboxStartError("a sandbox process did not say who it is")


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0
