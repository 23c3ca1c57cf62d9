"""The system calls that make a pooled sandbox host, and that bind it to a conversation at first use.

A sandbox template (``forkserver``) forks every host it is asked for; under bubblewrap each host then
leaves the template's namespaces for fresh ones of its own (mount, PID, IPC, UTS and, without network,
network) and replaces everything it would otherwise share with its siblings: a new ``/proc`` for its PID
namespace (read-only, as under bwrap), a new ``/tmp``, ``/dev/shm`` and ``/dev/pts``,
and ``/`` and ``/dev`` read-only. What the host still shares with its siblings is read-only: the system,
Python and tool paths.

A host is not tied to a conversation until its first task: the worker then clones the conversation's
scratch directory as a detached mount (``detach``: a mount that belongs to no namespace, so that ``..``
from its root leads nowhere) and passes its descriptor over the host's socket; the host moves it onto
``/scratch`` in its own mount namespace (``attach``). Then ``seal``: every capability dropped, the
bounding set emptied, and the full seccomp filter installed, before anything of the task runs.

Standard library only: it runs inside the sandbox, and in the worker for ``detach``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT = 428, 429
_OPEN_TREE_CLONE, _AT_SYMLINK_NOFOLLOW, _AT_FDCWD = 0x1, 0x100, -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_CAP_VERSION_3 = 0x20080522
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_TMP_BYTES = 64 * 1024 * 1024
SCRATCH = "/scratch"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encoded = [None if text is None else text.encode() for text in (source, target, fstype, data)]
    _check(
        _libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]), f"mount {target}"
    )


def _read_only(path: str, flags: int = 0) -> None:
    """Make the mount at ``path`` read-only (this namespace's view of it only)."""
    _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)


def isolate(*, network: bool, tmp_binds: Sequence[str] = ()) -> None:
    """In a host's fresh mount namespace (its PID namespace's first process): replace what it would
    share with the template's other hosts, and make the rest read-only. ``tmp_binds`` are the template's
    read-only binds under /tmp (a checkout or a virtual environment there), bound again on the new /tmp."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the template or a sibling
    # Read-only, as under bwrap: where the worker is root, so is the task to the kernel's /proc/sys.
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY)
    kept = [(path, os.path.isdir(path), _clone(path)) for path in tmp_binds]
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={_TMP_BYTES},mode=0755")
    for path, directory, tree in kept:
        try:
            _mount_point(path, directory)
            attach(tree, path)
        finally:
            os.close(tree)
    _mount("tmpfs", "/dev/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={_TMP_BYTES},mode=1777")
    _mount("devpts", "/dev/pts", "devpts", _MS_NOSUID | _MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    _read_only("/dev", _MS_NOSUID)
    _read_only("/", _MS_NOSUID | _MS_NODEV)
    if not network:
        _loopback_up()


def _mount_point(path: str, directory: bool) -> None:
    """A directory, or an empty file (a tool that is one module, not a package), to mount ``path`` on."""
    if directory:
        os.makedirs(path, exist_ok=True)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _loopback_up() -> None:
    """A new network namespace's loopback starts down (bwrap brings it up too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def detach(path: str) -> int:
    """A descriptor of a detached clone of the mount at ``path`` (the worker's side): needs
    CAP_SYS_ADMIN over the worker's mount namespace. Symlinks are not followed."""
    return _clone(path)


def _clone(path: str) -> int:
    flags = _OPEN_TREE_CLONE | _AT_SYMLINK_NOFOLLOW | os.O_CLOEXEC
    return _check(int(_libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, path.encode(), flags)), f"open_tree {path}")


def attach(tree: int, target: str = SCRATCH) -> None:
    """Mount the detached tree ``tree`` at ``target`` in this mount namespace."""
    result = _libc.syscall(_SYS_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH)
    _check(int(result), f"move_mount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_capabilities() -> None:
    """No capability left, none to gain back: the bounding set and the ambient set emptied, then the
    effective, permitted and inheritable sets (a later exec cannot give back what the bounding set lost)."""
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the kernel's last capability
                break
            _check(-1, f"PR_CAPBSET_DROP {cap}")
    _check(_libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "PR_CAP_AMBIENT")
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def install_filter(program: bytes) -> None:
    """Add the seccomp filter ``program`` (packed ``sock_filter``) to this process and its future children."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog, 0, 0), "seccomp")


def seal(program: bytes) -> None:
    """What a pooled host and its task's process do before any of the task runs."""
    drop_capabilities()
    install_filter(program)
