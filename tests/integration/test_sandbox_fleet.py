"""The pooled sandbox fleet: spare hosts forked from a template, bound to a conversation at their first task.

What the fleet changes, proven on real sandboxes: a host serves a conversation that did not exist when it
was forked; hosts forked from one template share nothing writable (each has its own /tmp, /dev/shm,
/dev/pts, /proc and namespaces, and / and /dev are read-only); a task holds no capability and runs under
the full seccomp filter; 200 conversations are served by one template without a host per conversation.
The escape probes run through the fleet, and through hosts bound at their start, in ``test_sandbox_escapes``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

import workers
from tests.integration.conftest_workers import (
    probe_registry,
    require_bubblewrap,
    require_landlock,
    sandbox_processes,
)
from toolbox.protocol import ToolCall, ToolResult
from workers.executor import Executor
from workers.registry import builtin_registry
from workers.sandbox import PooledSandbox, launch

pytestmark = pytest.mark.integration

_LEAVE = """import os
marks = {}
for path in ('/marker', '/tmp/marker', '/dev/shm/marker', '/dev/marker', 'marker'):
    try:
        with open(path, 'w') as handle:
            handle.write('left here')
        marks[path] = 'wrote'
    except OSError as exc:
        marks[path] = exc.strerror
marks"""

_FIND = """import os
found = [p for p in ('/marker', '/tmp/marker', '/dev/shm/marker', '/dev/marker') if os.path.exists(p)]
found + sorted(os.listdir('/dev/pts'))"""

_STATUS = """import os
fields = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
wanted = ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp')
status = {key: fields[key].strip() for key in wanted}
status['cwd'] = os.getcwd()
status['processes'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
status['ns'] = {name: os.readlink(f'/proc/self/ns/{name}') for name in ('pid', 'mnt', 'net', 'ipc', 'uts')}
try:
    open('/proc/sys/kernel/hostname', 'w').write('escaped')
    status['sysctl'] = 'wrote'
except OSError as exc:
    status['sysctl'] = exc.strerror
status"""


def _fleet(warm: int = 0) -> PooledSandbox:
    registry = builtin_registry()
    return PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=warm, binding="first_use")


def _python(executor: Executor, code: str, conversation: str) -> Any:
    async def call() -> Any:
        result = await executor.execute(ToolCall("c", "python", {"code": code}), conversation)
        assert result.ok, result
        return result.content["result"]

    return call()


def test_a_spare_host_serves_a_conversation_that_did_not_exist_when_it_was_forked(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> tuple[set[int], Any]:
        sandbox = _fleet(warm=2)
        async with Executor(builtin_registry(), sandbox=sandbox, scratch_root=tmp_path) as executor:
            task = executor.task(builtin_registry().entries["python"], {}, "early")
            await sandbox.prewarm(task)
            spares = sandbox.standing()
            write = {"action": "write", "path": "notes.txt", "content": "kept"}
            wrote = await executor.execute(ToolCall("w", "files", write), "late")
            listing = await _python(executor, "import os\nsorted(os.listdir('.'))", "late")
            assert wrote.ok, wrote
            return spares, listing

    spares, listing = asyncio.run(main())
    assert spares, "the spare hosts and their template should be running before the call"
    assert listing == ["notes.txt"]
    assert (tmp_path / "late" / "notes.txt").read_text() == "kept"
    assert not (tmp_path / "early").exists() or not any((tmp_path / "early").iterdir())


def test_hosts_of_one_template_share_nothing_writable(tmp_path: Path) -> None:
    """What a call leaves anywhere but its own scratch is gone for the next call, of its conversation or
    of another: / and /dev are read-only, /tmp and /dev/shm are the host's own, and so is /dev/pts."""
    require_bubblewrap()

    async def main() -> tuple[dict[str, str], list[str], list[str]]:
        async with Executor(builtin_registry(), sandbox=_fleet(), scratch_root=tmp_path) as executor:
            left = await _python(executor, _LEAVE + "\nimport pty\npty.openpty()\nmarks", "a")
            other = await _python(executor, _FIND, "b")
            same = await _python(executor, _FIND, "a")
            return left, other, same

    left, other, same = asyncio.run(main())
    assert left["/tmp/marker"] == "wrote" and left["/dev/shm/marker"] == "wrote" and left["marker"] == "wrote"
    assert left["/marker"] == "Read-only file system" and left["/dev/marker"] == "Read-only file system"
    assert other == ["ptmx"] and same == ["ptmx"], "a host saw what another host left"
    assert (tmp_path / "a" / "marker").read_text() == "left here"


def test_a_task_runs_without_privileges_in_namespaces_of_its_own(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> list[dict[str, Any]]:
        async with Executor(builtin_registry(), sandbox=_fleet(warm=2), scratch_root=tmp_path) as executor:
            calls = [
                executor.execute(ToolCall(str(n), "python", {"code": _STATUS}), f"c{n}") for n in range(2)
            ]
            results: list[ToolResult] = await asyncio.gather(*calls)
            assert all(result.ok for result in results), results
            return [result.content["result"] for result in results]

    first, second = asyncio.run(main())
    for status in (first, second):
        assert {status[key] for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {"0" * 16}
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        assert status["cwd"] == "/scratch"
        assert status["processes"] == [1, 2], "the task sees its host and itself only"
        assert status["sysctl"] in ("Read-only file system", "Permission denied")
    for name in ("pid", "mnt", "net", "ipc", "uts"):
        assert first["ns"][name] != second["ns"][name], f"two hosts share a {name} namespace"


def test_two_hundred_conversations_share_one_template(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> tuple[list[ToolResult], int, list[str]]:
        sandbox = _fleet(warm=4)
        async with Executor(builtin_registry(), sandbox=sandbox, scratch_root=tmp_path) as executor:
            calls = [
                executor.execute(ToolCall(str(n), "calculator", {"expression": f"{n} * 2"}), f"conv{n}")
                for n in range(200)
            ]
            results = await asyncio.gather(*calls)
            await sandbox.settle()
            templates = len(sandbox.fleet._templates)
            return results, templates, sandbox_processes(sandbox.standing())

    results, templates, left = asyncio.run(main())
    assert [result.content for result in results] == [n * 2 for n in range(200)]
    assert templates == 1
    assert left == [], "a finished call's host is still running"


def test_a_host_that_cannot_make_its_namespaces_is_a_clear_start_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the capabilities it makes hosts with (a template that kept none), a forked host says why
    it could not start, and the call is answered, not lost."""
    require_bubblewrap()
    monkeypatch.setattr(launch, "_TEMPLATE_CAPS", ())

    async def main() -> ToolResult:
        async with Executor(builtin_registry(), sandbox=_fleet(), scratch_root=tmp_path) as executor:
            return await executor.execute(ToolCall("c", "calculator", {"expression": "1 + 1"}), "c")

    result = asyncio.run(main())
    assert result.error is not None and result.error.type == "crashed"
    assert "did not start" in result.error.message and "unshare" in result.error.message


def test_landlock_hosts_are_pooled_too_and_find_their_scratch_from_the_request(tmp_path: Path) -> None:
    require_landlock()

    async def main() -> list[Any]:
        registry = probe_registry()
        sandbox = PooledSandbox("landlock", preload=registry.sandbox_modules(), warm=1)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            found = []
            for conversation in ("x", "y"):
                code = (
                    f"import os\nopen('{conversation}.txt', 'w').write('1')\n[os.getcwd(), os.listdir('.')]"
                )
                found.append(await _python(executor, code, conversation))
            assert sandbox.first_use(executor.task(registry.entries["python"], {}, "x"))
            return found

    x, y = asyncio.run(main())
    assert x == [str(tmp_path / "x"), ["x.txt"]] and y == [str(tmp_path / "y"), ["y.txt"]]


_TOOL = '''def shout(text: str) -> str:
    """Say it louder.

    Args:
        text: What to say.
    """
    return text.upper()
'''


@pytest.mark.parametrize("layout", ["package", "module"])
def test_a_checkout_under_tmp_is_bound_again_on_each_hosts_own_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    """Tools (and a virtual environment) under /tmp, as in a CI clone there: each host mounts a /tmp of its
    own and binds those paths again on top of it, read-only; their tools import and run, whether a tool
    is a package (a directory to bind) or one module (a file)."""
    require_bubblewrap()
    checkout = tmp_path / "checkout"
    assert checkout.is_relative_to("/tmp"), "the point of this test is a path under /tmp"
    checkout.mkdir()
    if layout == "package":
        (checkout / "tmptools").mkdir()
        source = checkout / "tmptools" / "__init__.py"
    else:
        source = checkout / "tmptools.py"
    source.write_text(_TOOL)
    monkeypatch.syspath_prepend(str(checkout))
    monkeypatch.delitem(sys.modules, "tmptools", raising=False)
    registry = builtin_registry()
    registry.add_function("tmptools:shout")
    write = f"open({str(source)!r}, 'a')"

    async def main() -> tuple[ToolResult, ToolResult, Any]:
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=0, binding="first_use")
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path / "scratch") as executor:
            shouted = await executor.execute(ToolCall("s", "shout", {"text": "hello"}), "c")
            planted = await executor.execute(ToolCall("p", "python", {"code": write}), "c")
            listing = await _python(executor, "import os\nsorted(os.listdir('/tmp'))", "c")
            return shouted, planted, listing

    shouted, planted, listing = asyncio.run(main())
    assert shouted.ok and shouted.content == "HELLO", shouted
    assert planted.ok and "Read-only file system" in planted.content["error"], planted  # the code's error
    assert source.read_text() == _TOOL
    # The host's /tmp holds the binds' paths and nothing else (this checkout's too, when it is under /tmp).
    ours = [Path(sys.prefix), Path(workers.__file__), checkout]
    assert set(listing) == {path.parts[2] for path in ours if path.is_relative_to("/tmp")}, listing
