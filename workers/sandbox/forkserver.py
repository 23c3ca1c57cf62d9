"""Inside a sandbox template: fork warm hosts on request, each single-use and bound at its first task.

A template is started once per kind of host (network or not, the tools it preloads) under the same
mechanism as any host, with the tool modules imported; it never runs a task. The worker asks it for
hosts on its control socket (a ``SOCK_SEQPACKET`` pair: each byte of a message asks for one host) and
gets back, for each, the worker's end of a new socket pair that joins it to the host.

Each host is a fork of the template, so it starts in milliseconds instead of the tens of milliseconds of
a sandbox and an interpreter. Under bubblewrap it then makes namespaces of its own (``nest``). Its life,
on its socket, one line each way:

- ``hello`` (host to worker): the kernel attaches the host's pid as the worker sees it (``SO_PASSCRED``);
- ``placed`` (worker to host): the worker has moved it into the call's cgroups;
- ``ready`` (host to worker): its task's process is forked and sealed, waiting;
- one byte carrying the conversation's detached scratch mount (``SCM_RIGHTS``; no descriptor under
  Landlock and the plain process, where the scratch path travels in the request), then the request;
- the answer, as from any host (``workers.sandboxhost``); then the host exits.

A host that cannot make its namespaces says ``error: ...`` instead of ``hello``.
"""

from __future__ import annotations

import array
import os
import signal
import socket
from typing import Any

from workers import sandboxhost
from workers.sandbox import nest, seccomp

_PR_SET_CHILD_SUBREAPER = 36


def serve(config: dict[str, Any]) -> None:
    """The template's loop: a host for every byte asked, until the worker closes the control socket."""
    control = socket.socket(fileno=int(config["control_fd"]))
    # Hosts whose intermediate process exited come back to the template, and the kernel reaps them.
    sandboxhost._prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control.send(b"z")  # ready; the kernel attaches the template's pid, as the worker sees it
    while asked := control.recv(256):
        for _ in asked:
            _fork(config, control)
    os._exit(0)


def _fork(config: dict[str, Any], control: socket.socket) -> None:
    worker_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    if os.fork() == 0:
        control.close()
        worker_end.close()
        _host(config, host_end)  # never returns
    host_end.close()
    socket.send_fds(control, [b"h"], [worker_end.fileno()])
    worker_end.close()


def _host(config: dict[str, Any], channel: socket.socket) -> None:
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the host waits for its task's process
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1):  # the template's own pipes; stderr stays, for what goes wrong
            os.dup2(null, fd)
        os.close(null)
        if config["namespaces"]:
            nest.unshare(_namespaces(config))
            if os.fork() != 0:  # the intermediate: its child is the first process of the new PID namespace
                os._exit(0)
            nest.isolate(network=bool(config["network"]), tmp_binds=config["tmp_binds"])
        else:
            sandboxhost._prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _live(config, channel)
    except BaseException as exc:  # told to the worker, which reports the host as failing to start
        code = 1
        _tell(channel, f"error: {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(code)


def _namespaces(config: dict[str, Any]) -> int:
    flags = nest.CLONE_NEWNS | nest.CLONE_NEWPID | nest.CLONE_NEWIPC | nest.CLONE_NEWUTS
    return flags if config["network"] else flags | nest.CLONE_NEWNET


def _live(config: dict[str, Any], channel: socket.socket) -> None:
    channel.sendall(b"hello\n")
    if _line(channel) != b"placed\n":
        return  # the worker let this host go before it was placed
    seal = None
    if config["namespaces"]:
        nest.unshare(nest.CLONE_NEWCGROUP)  # the task sees its own cgroup as the root, as under bwrap
        seal = seccomp.program()
    child = sandboxhost._prefork(config, seal)
    channel.sendall(b"ready\n")
    tree = _bound(channel)
    reader = channel.makefile("rb")
    line = reader.readline()
    pid_namespace = bool(config["namespaces"])
    if not line or (tree is None and pid_namespace):
        sandboxhost._kill_descendants(pid_namespace)
        return
    try:
        _bind(tree, seal)
    except OSError as exc:
        sandboxhost._kill_descendants(pid_namespace)
        channel.sendall(sandboxhost.encode(_unbound(exc)))
        return
    answer = sandboxhost.serve(child, line, sandboxhost.limits_of(line), pid_namespace=pid_namespace)
    channel.sendall(sandboxhost.encode(answer))


def _bind(tree: int | None, seal: bytes | None) -> None:
    """The conversation's scratch at /scratch, then no privilege left (before the task gets its request)."""
    if tree is not None:
        try:
            nest.attach(tree)
        finally:
            os.close(tree)
    if seal is not None:
        nest.seal(seal)


def _unbound(exc: OSError) -> dict[str, Any]:
    return {"error": {"type": "crashed", "message": f"the sandbox could not be bound: {exc}"}}


def _bound(channel: socket.socket) -> int | None:
    """The descriptor that comes with the byte before the request (``None`` when none came)."""
    size = socket.CMSG_SPACE(array.array("i").itemsize)
    data, ancillary, _, _ = channel.recvmsg(1, size)
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if data and fds else None


def _line(channel: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = channel.recv(64)
        if not chunk:
            return data
        data += chunk
    return data


def _tell(channel: socket.socket, message: bytes) -> None:
    try:  # noqa: SIM105 (the host is exiting either way)
        channel.sendall(message)
    except OSError:
        pass
