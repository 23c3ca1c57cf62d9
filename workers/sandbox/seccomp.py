"""A seccomp filter for tools, written as classic BPF by hand (no libseccomp on the host).

The filter is a deny list: tools need ordinary file, process and (when allowed) socket calls, but never
debugging other processes, mounting, loading kernel code, kernel keyrings, new namespaces, raw or packet
sockets, or io_uring (whose operations bypass this filter). A denied call fails with ``EPERM`` rather than
killing the process, so that a tool sees an ordinary error it can report. Non-native calling conventions
(x32, or any other architecture than the one the filter was built for) are killed outright, because
their syscall numbers do not match the table below.

``bwrap --seccomp FD`` and ``prctl(PR_SET_SECCOMP)`` both take the program as packed ``sock_filter``
structs, which is what :func:`program` returns.
"""

from __future__ import annotations

import errno
import platform
import struct

# Syscall numbers of x86_64 (arch/x86/entry/syscalls/syscall_64.tbl).
_DENIED_X86_64 = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "personality": 135,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
}
# What a template needs to make a host: its namespaces, its mounts, and clones of the read-only binds under
# /tmp (a checkout or a virtual environment there), which it binds again on the host's own /tmp.
_SETUP = frozenset({"unshare", "mount", "open_tree", "move_mount"})
_SOCKET, _CLONE, _CLONE3, _IOCTL = 41, 56, 435, 16
# Calls that send a signal to a process or thread named by the first argument, and those whose target the
# filter cannot check (tkill names a bare thread id; pidfd_send_signal a descriptor).
_KILL, _TGKILL, _RT_SIGQUEUEINFO, _RT_TGSIGQUEUEINFO = 62, 234, 129, 297
_TKILL, _PIDFD_SEND_SIGNAL = 200, 424
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_AF_UNIX, _AF_INET, _AF_INET6 = 1, 2, 10
_SOCK_TYPE_MASK, _SOCK_RAW, _SOCK_PACKET = 0xF, 3, 10
_TIOCSTI = 0x5412

_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000

# Classic BPF opcodes.
_LD_ABS = 0x20
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45
_AND = 0x54
_RET = 0x06
_OFF_NR, _OFF_ARCH = 0, 4


def _arg(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` in ``struct seccomp_data``."""
    return 16 + 8 * index


def supported() -> bool:
    """Whether a filter can be built for this machine's architecture."""
    return platform.machine() == "x86_64"


def denied_names(*, signals: bool = False) -> list[str]:
    """The calls the filter refuses, for ``caduceus doctor``."""
    names = [*sorted(_DENIED_X86_64), "socket(raw/packet/other families)", "clone(new namespaces)", "clone3"]
    if signals:
        names.append(
            "kill/tgkill/rt_sigqueueinfo to any process but the call's own, tkill, pidfd_send_signal"
        )
    return names


def program(*, allow_inet: bool = True, signal_self: int | None = None, setup: bool = False) -> bytes:
    """The packed filter. ``allow_inet=False`` also refuses AF_INET/AF_INET6 sockets.

    ``setup``: the filter of a sandbox template (``workers.sandbox.forkserver``), which must still make
    each host's namespaces and mounts: ``unshare``, ``mount``, ``open_tree`` and ``move_mount`` pass it. It
    never runs a task: every host installs the full filter on top of it (filters stack; the strictest
    answer wins) before anything of a task runs.

    ``signal_self``: where nothing else confines signals (Landlock before ABI 6, no PID namespace), the
    pid of the process installing the filter: signals may then go to it alone, so that a call cannot
    ``kill(-1, SIGKILL)`` or signal any other process of the host."""
    if not supported():
        raise OSError(f"no seccomp filter for architecture {platform.machine()!r}")
    deny = _RET_ERRNO | errno.EPERM
    code: list[tuple[int, int, int, int]] = []
    code.append((_LD_ABS, 0, 0, _OFF_ARCH))
    code.append((_JEQ, 1, 0, _AUDIT_ARCH_X86_64))
    code.append((_RET, 0, 0, _RET_KILL_PROCESS))
    code.append((_LD_ABS, 0, 0, _OFF_NR))
    code.append((_JGE, 0, 1, _X32_BIT))
    code.append((_RET, 0, 0, _RET_KILL_PROCESS))
    allowed = _SETUP if setup else frozenset()
    for number in sorted(n for name, n in _DENIED_X86_64.items() if name not in allowed):
        code.append((_JEQ, 0, 1, number))
        code.append((_RET, 0, 0, deny))
    if signal_self is not None:
        code.extend(_signal_check(deny, signal_self))
    # clone3 passes its flags in memory, which a filter cannot read: refuse it with ENOSYS so that libc
    # falls back to clone(2), whose flags we can check.
    code.append((_JEQ, 0, 1, _CLONE3))
    code.append((_RET, 0, 0, _RET_ERRNO | errno.ENOSYS))
    code.extend(_clone_check(deny))
    code.extend(_ioctl_check(deny))
    code.extend(_socket_check(deny, allow_inet))
    code.append((_RET, 0, 0, _RET_ALLOW))
    return b"".join(struct.pack("<HBBI", *insn) for insn in code)


def _signal_check(deny: int, pid: int) -> list[tuple[int, int, int, int]]:
    checks: list[tuple[int, int, int, int]] = []
    for number in (_TKILL, _PIDFD_SEND_SIGNAL):
        checks += [(_JEQ, 0, 1, number), (_RET, 0, 0, deny)]
    for number in (_KILL, _TGKILL, _RT_SIGQUEUEINFO, _RT_TGSIGQUEUEINFO):
        checks += [
            (_JEQ, 0, 4, number),
            (_LD_ABS, 0, 0, _arg(0)),
            (_JEQ, 0, 1, pid & 0xFFFFFFFF),
            (_RET, 0, 0, _RET_ALLOW),
            (_RET, 0, 0, deny),
        ]
    return checks


def _clone_check(deny: int) -> list[tuple[int, int, int, int]]:
    return [
        (_JEQ, 0, 4, _CLONE),
        (_LD_ABS, 0, 0, _arg(0)),
        (_JSET, 0, 1, _CLONE_NAMESPACES),
        (_RET, 0, 0, deny),
        (_RET, 0, 0, _RET_ALLOW),
    ]


def _ioctl_check(deny: int) -> list[tuple[int, int, int, int]]:
    # TIOCSTI pushes characters into a terminal's input queue: a classic way out of a sandbox.
    return [
        (_JEQ, 0, 4, _IOCTL),
        (_LD_ABS, 0, 0, _arg(1)),
        (_JEQ, 0, 1, _TIOCSTI),
        (_RET, 0, 0, deny),
        (_RET, 0, 0, _RET_ALLOW),
    ]


def _socket_check(deny: int, allow_inet: bool) -> list[tuple[int, int, int, int]]:
    families = [_AF_UNIX, _AF_INET, _AF_INET6] if allow_inet else [_AF_UNIX]
    checks: list[tuple[int, int, int, int]] = [(_LD_ABS, 0, 0, _arg(0))]
    # Jump to the type check when the family is allowed; otherwise fall through to deny.
    for index, family in enumerate(families):
        checks.append((_JEQ, len(families) - index, 0, family))
    checks.append((_RET, 0, 0, deny))
    checks += [
        (_LD_ABS, 0, 0, _arg(1)),
        (_AND, 0, 0, _SOCK_TYPE_MASK),
        (_JEQ, 1, 0, _SOCK_RAW),
        (_JEQ, 0, 1, _SOCK_PACKET),
        (_RET, 0, 0, deny),
        (_RET, 0, 0, _RET_ALLOW),
    ]
    return [(_JEQ, 0, len(checks), _SOCKET), *checks]
