"""The program that runs inside a sandbox: it waits, warm, for one task, runs it in a fork, and exits.

The worker starts it (``python -I -S -c BOOT PATHS CONFIG``) inside the sandbox before any call arrives,
so that a call pays for a fork instead of for namespaces and an interpreter start. Each host serves exactly
one task and then exits, so that nothing a task leaves behind (a background process, a changed global)
survives into the next one; the pool starts a replacement meanwhile.

The protocol on the host's stdin/stdout, one JSON document per line:
``ready`` (host to worker, once the tool modules are imported), then the request
``{"target", "arguments", "limits", "egress"}`` (worker to host), then the answer
``{"content": ...}`` or ``{"error": {"type", "message"}, "content": ...}`` (host to worker).

The task's process is forked as soon as the host is warm and waits for its request on a pipe of its own,
so a call pays for neither an interpreter start nor a fork. It gets ``/dev/null`` as stdin/stdout/stderr
before it reads the request, so it can neither read the control channel nor forge an answer on it; its
result travels on a pipe of its own. Only the standard
library is imported before the tool module, to keep the cold start short.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import select
import signal
import sys
import time

# ``typing`` costs milliseconds of every cold start, and annotations here are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_SLACK = 64 * 1024
_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36


def main() -> None:
    config = json.loads(sys.argv[2])
    _prepare(config)
    if config.get("template"):
        from workers.sandbox import forkserver  # noqa: PLC0415 (templates only)

        forkserver.serve(config)  # never returns
    pid_namespace = bool(config.get("pid_namespace"))
    child = _prefork(config)
    control_in, control_out = sys.stdin.buffer, sys.stdout.buffer
    control_out.write(b"ready\n")
    control_out.flush()
    line = control_in.readline()
    if not line:
        _kill_descendants(pid_namespace)
        return
    answer = serve(child, line, limits_of(line), pid_namespace=pid_namespace)
    control_out.write(encode(answer))
    control_out.flush()


def _prepare(config: dict[str, Any]) -> None:
    """What a host (or a template, for the hosts it forks) does before it says it is ready."""
    os.environ.clear()
    os.environ.update(config.get("env", {}))
    # Not dumpable: the task's process runs as the same user, and could otherwise open this host's
    # /proc entries (its control pipe, its memory) and forge or withhold the answer.
    _prctl(_PR_SET_DUMPABLE, 0)
    if not config.get("pid_namespace") and not config.get("template"):
        # Orphans of the task are re-parented to this host rather than to init, so the host can find
        # and kill them when the task ends (outside a PID namespace nothing else would).
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if config.get("confine") == "landlock":
        # Imported now, applied by the task's process to itself once it has its request (see _confine).
        importlib.import_module("workers.sandbox.landlock")
    for module in config.get("preload", []):
        importlib.import_module(module)
    # Objects that exist now are never collected, so the forked child does not copy their pages by
    # touching them during a collection.
    gc.freeze()


def limits_of(line: bytes) -> dict[str, Any]:
    limits: dict[str, Any] = json.loads(line)["limits"]
    return limits


def encode(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer).encode() + b"\n"


def _prctl(option: int, value: int) -> int:
    # ``_ctypes`` rather than ``ctypes``: the public module costs every cold start about 3 ms.
    import _ctypes  # noqa: PLC0415 (see above)

    libc = _ctypes.dlopen(None)  # type: ignore[arg-type]
    return int(_ctypes.call_function(_ctypes.dlsym(libc, "prctl"), (option, value, 0, 0, 0)))


def _prefork(config: dict[str, Any], seal: bytes | None = None) -> tuple[int, int, int]:
    """Fork the task's process now, before the task arrives, so that a call does not pay for the fork.
    ``seal``: the seccomp filter the child installs, with every capability dropped, before it reads its
    request (a pooled host's, which still holds the privileges it binds its scratch with).

    Returns the child's pid, the pipe that will carry it the request, and the pipe its result comes on.
    """
    request_read, request_write = os.pipe()
    result_read, result_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the task's process: never returns
        os.close(request_write)
        os.close(result_read)
        _child(request_read, config, result_write, seal)
    os.close(request_read)
    os.close(result_write)
    return pid, request_write, result_read


def serve(
    child: tuple[int, int, int], line: bytes, limits: dict[str, Any], *, pid_namespace: bool = False
) -> dict[str, Any]:
    """Hand the request to the pre-forked child and wait for its result under the limits."""
    pid, request_write, result_read = child
    try:  # noqa: SIM105 (contextlib would cost the cold start an import)
        _write_all(request_write, line)
    except BrokenPipeError:
        pass  # the child is gone: reported below from its exit status
    os.close(request_write)
    cap = limits["output_bytes"] + _SLACK
    data, timed_out = _collect(result_read, cap, time.monotonic() + limits["wall_seconds"])
    status = 0  # when a result arrived the child's exit status adds nothing: do not wait for it
    if not timed_out and not data:
        waited = _wait(pid, time.monotonic() + limits["wall_seconds"])
        timed_out = waited is None
        status = waited or 0
    _kill_descendants(pid_namespace)  # what the task left running dies with it, before the answer goes out
    return _answer(data, status, timed_out, limits)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _wait(pid: int, deadline: float) -> int | None:
    """The child's wait status, or ``None`` if it is still running at the deadline."""
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.002)
    return None


def _collect(fd: int, cap: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    os.close(fd)
    return b"".join(chunks), False


def _answer(data: bytes, status: int, timed_out: bool, limits: dict[str, Any]) -> dict[str, Any]:
    if timed_out:
        return _error("timeout", f"the call ran past its wall-clock limit of {limits['wall_seconds']} s")
    if data:
        if len(data) > limits["output_bytes"] + _SLACK:
            return _error("output_truncated", f"the result passed the {limits['output_bytes']}-byte limit")
        try:
            answer: dict[str, Any] = json.loads(data)
            return answer
        except ValueError:
            return _error("crashed", "the tool's process wrote an unreadable result")
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number in (signal.SIGXCPU, signal.SIGKILL):
            return _error("timeout", f"the call used up its CPU time limit of {limits['cpu_seconds']} s")
        return _error("crashed", f"the tool's process died of signal {signal.Signals(number).name}")
    return _error("crashed", f"the tool's process exited with status {os.waitstatus_to_exitcode(status)}")


def _error(kind: str, message: str, content: Any = None) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}, "content": content}


def _child(request_fd: int, config: dict[str, Any], result_fd: int, seal: bytes | None) -> None:
    request: dict[str, Any] = {}
    try:
        # Leave the session and the control channel before anything of the task runs.
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        _close_others(request_fd, result_fd)
        if seal is not None:
            from workers.sandbox import nest  # noqa: PLC0415 (pooled hosts only)

            nest.seal(seal)
        request = json.loads(_read_all(request_fd) or b"null")
        if not request:
            return
        scratch = request.get("scratch") or config.get("scratch", ".")
        _confine({**config, "scratch": scratch}, request)
        _limit(request["limits"])
        os.chdir(scratch)
        answer = _call(request, scratch)
        data = json.dumps(answer, default=repr).encode()
        limit = request["limits"]["output_bytes"]
        if len(data) > limit:
            data = json.dumps(_truncated(answer, limit)).encode()
        _write_all(result_fd, data)
        os.close(result_fd)  # EOF now, rather than after the interpreter's teardown
    except MemoryError:
        os.write(result_fd, json.dumps(_error("out_of_memory", _memory_message(request))).encode())
    except Exception as exc:  # the task's process could not be made ready: ours, not the tool's
        message = f"the task's process could not start: {type(exc).__name__}: {exc}"
        os.write(result_fd, json.dumps(_error("crashed", message)).encode())
    finally:
        os._exit(0)


def _close_others(*keep: int) -> None:
    """Close every descriptor but 0-2 and ``keep`` (a pooled host's socket to the worker among them)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _confine(config: dict[str, Any], request: dict[str, Any]) -> None:
    """Under the landlock mechanism the task's process confines itself (not the host, which must still
    be able to find and kill the task's processes through /proc); inet only with an allow-list."""
    if config.get("confine") == "landlock":
        landlock = sys.modules["workers.sandbox.landlock"]
        landlock.confine_self({**config, "network": bool(request.get("egress"))})


def _truncated(answer: dict[str, Any], limit: int) -> dict[str, Any]:
    text = json.dumps(answer.get("content"), default=repr)[: limit // 2]
    return _error("output_truncated", f"the result passed the {limit}-byte output limit; shown cut", text)


def _memory_message(request: dict[str, Any]) -> str:
    mib = request.get("limits", {}).get("memory_bytes", 0) // (1024 * 1024)
    return f"the call ran out of memory (limit {mib} MiB); use less memory"


def _limit(limits: dict[str, Any]) -> None:
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _call(request: dict[str, Any], scratch: str) -> dict[str, Any]:
    import pathlib  # noqa: PLC0415 (imported here, after the fork, to keep the cold start short)

    from toolbox.tools import context  # noqa: PLC0415 (see above)

    module_name, _, function_name = request["target"].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    limits = request["limits"]
    tool_context = context.ToolContext(
        scratch=pathlib.Path(scratch),
        egress=tuple(request.get("egress", ())),
        output_bytes=limits["output_bytes"],
    )
    context.use(tool_context)
    try:
        return {"content": function(**request["arguments"])}
    except context.DeniedError as exc:
        return _error("denied", str(exc))
    except context.OutputTruncatedError as exc:
        return _error("output_truncated", str(exc), exc.partial)
    except MemoryError:
        return _error("out_of_memory", _memory_message(request))
    except Exception as exc:
        import traceback  # noqa: PLC0415 (see above)

        last = traceback.format_exception_only(exc)[-1].strip()
        return _error("tool_error", f"the tool raised {last}")


def _kill_descendants(pid_namespace: bool) -> None:
    """SIGKILL every process descended from this host, until none is left (a fork bomb keeps forking)."""
    if pid_namespace:
        _kill_namespace()
        return
    for _ in range(200):
        victims = _descendants(os.getpid())
        if not victims:
            return
        for pid in victims:
            try:  # noqa: SIM105 (contextlib would cost the cold start an import)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap()  # so that the next scan sees progress


def _kill_namespace() -> None:
    # In its own PID namespace the host sees only the sandbox: kill(-1) reaches every process in it but
    # the host itself and bwrap's init. It succeeds while any process (even a dying one) is left, so the
    # loop ends when the sandbox holds nothing but the two of them.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            return
        _reap()
        time.sleep(0.0005)


def _reap() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return sorted(found)


if __name__ == "__main__":
    main()
