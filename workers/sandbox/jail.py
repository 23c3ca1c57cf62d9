"""Long-lived servers (MCP servers) under the same isolation and limits as a tool call.

``command()`` returns the command line that starts a server through a small launcher (``main`` below,
``python -I -S``): it joins the server's cgroup (memory, processes, CPU share), sets the per-process
limits and a clean environment, and then

- ``bubblewrap``: becomes ``bwrap`` with the same namespaces, mounts and seccomp filter as a sandbox host
  (no network unless the server has an egress allow-list);
- ``landlock``: confines itself (read-only system, Python and the server's paths, a private writable
  directory, no TCP without egress, no signals out; seccomp) and becomes the server;
- ``process``: becomes the server, limited but not isolated (``caduceus doctor`` says so).

No CPU-time limit: a server lives across calls (each call is bounded by its wall-clock limit, and the
server by its CPU share). No address-space limit where a memory cgroup bounds the server, since runtimes
reserve far more address space than they use.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

from workers.sandbox import launch
from workers.sandbox.policy import Limits, Mechanism

SECCOMP_FD = 9
_BOOT = "import sys,json;sys.path[:0]=json.loads(sys.argv[1]);from workers.sandbox.jail import main;main()"
_DEVICES = ("/dev/null", "/dev/urandom")


def command(
    argv: list[str],
    *,
    mechanism: Mechanism,
    read_only: tuple[str, ...],
    egress: bool,
    limits: Limits,
    groups: dict[str, Path],
    home: Path,
) -> list[str]:
    """The command line that starts ``argv`` jailed; ``home`` is its private writable directory."""
    program = _resolved(argv[0])
    # Both the command as named (a virtual environment's python is a link, found by its path) and what
    # it links to must be readable.
    readable = [*read_only, str(Path(program).parent), str(Path(os.path.realpath(program)).parent)]
    if mechanism == "bubblewrap":
        argv = [*_bwrap_args(readable, egress), "--", program, *argv[1:]]
    config = {
        "argv": [program, *argv[1:]] if mechanism != "bubblewrap" else argv,
        "mechanism": mechanism,
        "groups": sorted({str(group) for group in groups.values()}),
        "limits": limits.to_json(),
        # Without a memory or pids cgroup, the per-process limits are all there is.
        "address_space": "memory" not in groups,
        "nproc": "pids" not in groups,
        "home": str(home),
        "network": egress,
        "read_only": [str(p) for p in _readable(readable)],
    }
    roots = launch.package_roots(())
    return [
        launch.python_binary(),
        "-I",
        "-S",
        "-B",
        "-c",
        _BOOT,
        json.dumps(launch.sys_path(roots)),
        json.dumps(config),
    ]


def _resolved(program: str) -> str:
    found = shutil.which(program) if "/" not in program else program
    if found is None:
        raise FileNotFoundError(f"MCP server command {program!r} is not on PATH")
    return os.path.abspath(found)


def _readable(extra: list[str]) -> list[Path]:
    paths = [Path(sys.base_prefix), Path(sys.prefix), *launch.site_dirs(), *map(Path, extra)]
    paths += [Path(name) for name in (*launch.ETC_FILES, *launch.SYSTEM_DIRS) if not Path(name).is_symlink()]
    paths += [Path(name) for name in _DEVICES]
    return [path for path in dict.fromkeys(paths) if path.exists()]


def _bwrap_args(readable: list[str], egress: bool) -> list[str]:
    args = [launch.bwrap_binary(), "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL"]
    if not egress:
        args.append("--unshare-net")
    # The private /tmp first: binds of paths under /tmp (a checkout, a virtual environment) go on top.
    # /proc read-only: run as root, a server that could write /proc/sys would set the kernel's settings.
    args += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for name in launch.SYSTEM_DIRS:
        if Path(name).is_symlink():
            args += ["--symlink", os.readlink(name), name]
    for path in _readable(readable):
        if not str(path).startswith("/dev/"):
            args += ["--ro-bind", str(path), str(path)]
    args += ["--chdir", "/tmp"]
    args += ["--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    return [*args, "--seccomp", str(SECCOMP_FD)]


def main() -> None:
    """In the launcher: cgroups, limits, environment, then the mechanism's confinement, then exec."""
    config: dict[str, Any] = json.loads(sys.argv[2])
    pid = str(os.getpid())
    for group in config["groups"]:
        with open(Path(group) / "cgroup.procs", "w") as procs:
            procs.write(pid)
    _limit(config["limits"], address_space=config["address_space"], nproc=config["nproc"])
    home = config["home"]
    os.chdir(home)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"}
    if config["mechanism"] == "bubblewrap":
        _seccomp_pipe(network=config["network"])
    elif config["mechanism"] == "landlock":
        from workers.sandbox import landlock  # noqa: PLC0415 (only this mechanism needs it)

        landlock.confine_self(
            {"read_only": config["read_only"], "scratch": home, "network": config["network"]}
        )
    os.execve(config["argv"][0], config["argv"], env)


def _limit(limits: dict[str, Any], *, address_space: bool, nproc: bool) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    if nproc:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space:
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))


def _seccomp_pipe(*, network: bool) -> None:
    """Hand bwrap the seccomp filter on ``SECCOMP_FD`` (a pipe: it fits the buffer)."""
    from workers.sandbox import seccomp  # noqa: PLC0415

    read_end, write_end = os.pipe()
    os.write(write_end, seccomp.program(allow_inet=network))
    os.close(write_end)
    os.dup2(read_end, SECCOMP_FD, inheritable=True)
    os.close(read_end)
