"""The executor end to end on real sandboxes: results, model-fixable errors, scratch, tools, policy."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import workers_user_tools
from tests.integration.conftest_workers import cold_executor, require_bubblewrap, sandbox_processes
from toolbox.hermes import tool_response_payload
from toolbox.protocol import ToolCall, ToolResult
from workers.errors import ToolConfigError
from workers.executor import NOT_STARTED, Executor
from workers.registry import ToolRegistry, builtin_registry
from workers.sandbox import PooledSandbox
from workers.sandbox.policy import Limits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def run_calls(
    registry: ToolRegistry, root: Path, *calls: tuple[str, dict[str, object], str]
) -> list[ToolResult]:
    async def main() -> list[ToolResult]:
        async with cold_executor(registry, root) as executor:
            results = [
                await executor.execute(ToolCall(f"c{i}", n, a), conv) for i, (n, a, conv) in enumerate(calls)
            ]
            await executor.sandbox.settle()
            return results

    return asyncio.run(main())


def payload(result: ToolResult) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(tool_response_payload(result))
    return decoded


def test_python_result_renders_as_the_hermes_payload(tmp_path: Path) -> None:
    [result] = run_calls(builtin_registry(), tmp_path, ("python", {"code": "print('hi')\n2 + 3"}, "c"))
    assert payload(result) == {
        "name": "python",
        "content": {"stdout": "hi\n", "stderr": "", "result": 5, "error": None},
    }


def test_model_fixable_errors_come_back_as_results(tmp_path: Path) -> None:
    results = run_calls(
        builtin_registry(),
        tmp_path,
        ("python", {"code": 3}, "c"),
        ("nope", {}, "c"),
        ("calculator", {"expression": "1 / 0"}, "c"),
        ("files", {"action": "read", "path": "../../etc/passwd"}, "c"),
    )
    assert [r.error.type if r.error else None for r in results] == [
        "invalid_arguments",
        "unknown_tool",
        "tool_error",
        "denied",
    ]
    assert "ZeroDivisionError" in results[2].error.message  # type: ignore[union-attr]


def test_scratch_persists_within_a_conversation_and_is_private_to_it(tmp_path: Path) -> None:
    results = run_calls(
        builtin_registry(),
        tmp_path,
        ("files", {"action": "write", "path": "a.txt", "content": "one"}, "alpha"),
        ("python", {"code": "open('a.txt').read()"}, "alpha"),
        ("python", {"code": "import os\nos.listdir('.')"}, "beta"),
        ("python", {"code": "import os\nos.listdir('/scratch/..')"}, "beta"),
    )
    assert results[1].content["result"] == "one"
    assert results[2].content["result"] == []
    assert "alpha" not in json.dumps(results[3].content)
    assert (tmp_path / "alpha" / "a.txt").read_text() == "one"


def test_files_tool_refuses_a_host_symlink_planted_in_scratch(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (tmp_path / "gamma").mkdir()
    (tmp_path / "gamma" / "link").symlink_to(secret)
    [result] = run_calls(builtin_registry(), tmp_path, ("files", {"action": "read", "path": "link"}, "gamma"))
    assert "top secret" not in tool_response_payload(result)
    assert result.error is not None


def test_user_tool_by_import_path_runs_sandboxed(tmp_path: Path) -> None:
    registry = builtin_registry()
    registry.add_function("workers_user_tools:get_weather")
    registry.add_function("workers_user_tools:where_am_i")
    weather, cwd = run_calls(
        registry, tmp_path, ("get_weather", {"city": "Paris"}, "c"), ("where_am_i", {}, "c")
    )
    assert weather.content == {"city": "Paris", "temperature": 22, "pid_is_sandboxed": True}
    assert cwd.content == "/scratch"
    spec = registry.get("get_weather").spec  # type: ignore[union-attr]
    assert spec.parameters["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]


def test_registration_refuses_bad_tools() -> None:
    registry = ToolRegistry()
    with pytest.raises(ToolConfigError, match="not documented"):
        registry.add_function("workers_user_tools:undocumented")
    with pytest.raises(ToolConfigError, match="cannot import"):
        registry.add_function("workers_user_tools:missing")
    with pytest.raises(ToolConfigError, match="did not flag it trusted"):
        registry.add_function("workers_user_tools:get_weather", isolation="trusted")


def test_trusted_tool_runs_in_process_only_when_the_operator_flags_it(tmp_path: Path) -> None:
    registry = ToolRegistry(trusted=["get_weather"])
    registry.add_function("workers_user_tools:get_weather", isolation="trusted")
    [result] = run_calls(registry, tmp_path, ("get_weather", {"city": "Oslo"}, "c"))
    assert result.content == {"city": "Oslo", "temperature": 22, "pid_is_sandboxed": False}


@pytest.fixture
def web() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from loopback"
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_get_reaches_only_allowed_hosts(tmp_path: Path, web: int) -> None:
    registry = builtin_registry(http_allow=[f"127.0.0.1:{web}", "localhost"])
    allowed, other_host, other_port = run_calls(
        registry,
        tmp_path,
        ("http_get", {"url": f"http://127.0.0.1:{web}/"}, "c"),
        ("http_get", {"url": f"http://127.0.0.2:{web}/"}, "c"),
        ("http_get", {"url": f"http://localhost:{web}/"}, "c"),
    )
    assert allowed.content == {"status": 200, "content_type": "text/plain", "body": "hello from loopback"}
    assert other_host.error is not None and other_host.error.type == "denied"
    assert other_port.error is not None and other_port.error.type == "denied"
    assert f"port {web} is not allowed" in other_port.error.message
    assert "http_get" not in [spec.name for spec in builtin_registry().specs()]


def test_warm_pool_serves_a_prestarted_host_and_leaves_nothing_after_close(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> tuple[float, ToolResult]:
        registry = builtin_registry()
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=1)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            task = executor.task(registry.get("python"), {"code": "1"}, "w")  # type: ignore[arg-type]
            await sandbox.prewarm(task)
            started = time.perf_counter()
            result = await executor.execute(ToolCall("c", "python", {"code": "1 + 1"}), "w")
            elapsed = time.perf_counter() - started
            await sandbox.prewarm(task)
            assert sandbox_processes(), "the pool should hold a warm host"
        assert sandbox_processes() == []
        return elapsed, result

    elapsed, result = asyncio.run(main())
    assert result.content["result"] == 2
    assert elapsed < 0.5


def test_a_sandbox_not_ready_in_time_answers_the_call_with_an_error(tmp_path: Path) -> None:
    require_bubblewrap()

    async def main() -> ToolResult:
        registry = builtin_registry()
        # No host gets ready within a millisecond: a cold start on a loaded machine, made certain.
        sandbox = PooledSandbox("bubblewrap", preload=registry.sandbox_modules(), warm=0, start_timeout=0.001)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            return await executor.execute(ToolCall("c", "python", {"code": "1 + 1"}), "slow")

    result = asyncio.run(main())
    assert result.error is not None and result.error.type == "crashed"
    assert NOT_STARTED in result.error.message and "not ready within 0.001 s" in result.error.message
    assert sandbox_processes() == []


@pytest.mark.parametrize("mechanism", ["landlock", "process"])
def test_fallback_mechanisms(tmp_path: Path, mechanism: str) -> None:
    async def main() -> list[ToolResult]:
        registry = builtin_registry()
        sandbox = PooledSandbox(mechanism, preload=registry.sandbox_modules(), warm=0)  # type: ignore[arg-type]
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path) as executor:
            return [
                await executor.execute(ToolCall("1", "python", {"code": "open('/etc/shadow').read()"}), "c"),
                await executor.execute(ToolCall("2", "calculator", {"expression": "6 * 7"}), "c"),
            ]

    shadow, calc = asyncio.run(main())
    assert calc.content == 42
    if mechanism == "process":
        assert shadow.error is not None and shadow.error.type == "denied"
    else:
        assert "Permission denied" in shadow.content["error"]


def test_limits_are_per_tool(tmp_path: Path) -> None:
    registry = ToolRegistry()
    registry.add_function(
        "toolbox.tools.python:python", isolation="untrusted", limits=Limits(wall_seconds=1.0)
    )
    started = time.monotonic()
    [result] = run_calls(registry, tmp_path, ("python", {"code": "import time\ntime.sleep(30)"}, "c"))
    assert result.error is not None and result.error.type == "timeout"
    assert time.monotonic() - started < 5


def test_sandboxed_code_runs_under_seccomp_without_capabilities_or_host_environment(tmp_path: Path) -> None:
    code = (
        "import os, re\n"
        "status = dict(re.findall(r'(\\w+):\\s+(.*)', open('/proc/self/status').read()))\n"
        "[status['Seccomp'], status['NoNewPrivs'], status['CapEff'], sorted(os.environ), os.uname().nodename]"
    )
    [result] = run_calls(builtin_registry(), tmp_path, ("python", {"code": code}, "c"))
    assert result.content["result"] == [
        "2",
        "1",
        "0000000000000000",
        ["HOME", "LANG", "PATH", "TMPDIR"],
        "sandbox",
    ]


def test_results_are_cut_at_the_output_limit_in_process_too(tmp_path: Path) -> None:
    registry = ToolRegistry(trusted=["shout"])
    registry.add_function("workers_user_tools:shout", isolation="trusted", limits=Limits(output_bytes=1000))
    registry.add_function("workers_user_tools:get_weather", limits=Limits(output_bytes=1000))
    cut, fine = run_calls(
        registry,
        tmp_path,
        ("shout", {"text": "ab", "times": 10_000}, "c"),
        ("get_weather", {"city": "Rome"}, "c"),
    )
    assert cut.error is not None and cut.error.type == "output_truncated"
    assert len(tool_response_payload(cut)) < 1000
    assert fine.ok


@pytest.mark.parametrize(("slots", "peak"), [(None, 6), (2, 2)])
def test_an_executor_runs_at_most_max_concurrent_calls_at_once(
    tmp_path: Path, slots: int | None, peak: int
) -> None:
    """The tool workers queue calls past ``max_concurrent_calls`` in the executor, in order."""

    registry = ToolRegistry(trusted=["linger"])
    registry.add_function("tests.integration.workers_user_tools:linger", isolation="trusted")
    workers_user_tools.CONCURRENCY.update(now=0, peak=0)

    async def main() -> list[ToolResult]:
        sandbox = PooledSandbox("process", warm=0)
        async with Executor(registry, sandbox=sandbox, scratch_root=tmp_path, max_concurrent=slots) as ex:
            calls = [ex.execute(ToolCall(str(n), "linger", {"seconds": 0.2}), "c") for n in range(6)]
            return list(await asyncio.gather(*calls))

    results = asyncio.run(main())
    assert all(result.ok for result in results), results
    assert workers_user_tools.CONCURRENCY["peak"] == peak
