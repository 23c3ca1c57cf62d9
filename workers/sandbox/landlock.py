"""Landlock + seccomp confinement of the current process, the fallback where namespaces are blocked.

The task's process applies it to itself once it has its request: reads only under the system, Python
and tool paths (not /proc, so no other process can be inspected), reads and writes only in the scratch
directory, (ABI 4 and later) no TCP connect or bind unless the tool has an egress allow-list, and (ABI 6
and later) no signals to processes outside its own Landlock domain. The same seccomp filter as under
bubblewrap follows, with inet sockets refused when the tool has no allow-list, so older Landlock ABIs
without network rules still keep the task off the network; and where Landlock cannot scope signals
(ABI before 6, kernels before 6.12) the filter lets the process signal only itself, since without a PID
namespace a call could otherwise signal, even ``kill(-1, SIGKILL)``, every process of the worker's user.
"""

from __future__ import annotations

import ctypes
import os
import struct
from typing import Any

from workers.sandbox import seccomp

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_ALL_V1 = (1 << 13) - 1
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_NET_ALL = 0b11  # bind_tcp | connect_tcp
_SCOPE_ALL = 0b11  # abstract unix sockets | signals

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def abi_version() -> int:
    result = int(_libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return result if result > 0 else 0


def problem() -> str | None:
    """Why Landlock cannot be used here, or ``None`` when it can."""
    if abi_version() <= 0:
        return f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}"
    return None


def _handled(abi: int) -> tuple[int, int]:
    fs = _ALL_V1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    return fs, (_NET_ALL if abi >= 4 else 0)


def scopes_signals(abi: int) -> bool:
    return abi >= 6


def confine_self(config: dict[str, Any]) -> None:
    """Apply Landlock and seccomp to this process; raise ``OSError`` if either fails.

    ``config["landlock_abi"]``, when set, caps the ABI used (to run as on an older kernel)."""
    abi = abi_version()
    if config.get("landlock_abi"):
        abi = min(abi, int(config["landlock_abi"]))
    fs, net = _handled(abi)
    attr = _ruleset_attr(abi, fs, 0 if config.get("network") else net)
    ruleset = int(_libc.syscall(_SYS_CREATE_RULESET, attr, len(attr), 0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    try:
        for path in config.get("read_only", []):
            _allow(ruleset, path, _READ & fs)
        _allow(ruleset, config["scratch"], fs & ~_REFER)
        _allow(ruleset, "/dev/null", (1 << 1) | (1 << 2))  # write and read file
        _restrict(ruleset)
    finally:
        os.close(ruleset)
    signal_self = None if scopes_signals(abi) else os.getpid()
    _seccomp(allow_inet=bool(config.get("network")), signal_self=signal_self)


def _ruleset_attr(abi: int, fs: int, net: int) -> bytes:
    if abi >= 6:
        return struct.pack("QQQ", fs, net, _SCOPE_ALL)
    if abi >= 4:
        return struct.pack("QQ", fs, net)
    return struct.pack("Q", fs)


def _allow(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist here needs no rule
    try:
        if not os.path.isdir(path):
            access &= (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14)  # only file rights apply to a file
        rule = struct.pack("=Qi", access, fd)
        if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) < 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    finally:
        os.close(fd)


def _restrict(ruleset: int) -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if _libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) < 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")


def _seccomp(*, allow_inet: bool, signal_self: int | None) -> None:
    program = seccomp.program(allow_inet=allow_inet, signal_self=signal_self)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HxxxxxxQ", len(program) // 8, ctypes.addressof(buffer))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fprog, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp")
