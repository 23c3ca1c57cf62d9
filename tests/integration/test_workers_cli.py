"""``caduceus tool call``, ``caduceus tool list`` and ``caduceus doctor``, run as real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CADUCEUS = str(Path(sys.executable).with_name("caduceus"))


def caduceus(*args: str, scratch: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CADUCEUS_SCRATCH_ROOT": str(scratch), **extra}
    return subprocess.run([CADUCEUS, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_tool_call_prints_the_payload_and_exits_zero(tmp_path: Path) -> None:
    done = caduceus("tool", "call", "python", '{"code": "print(1)\\n6 * 7"}', scratch=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "name": "python",
        "content": {"stdout": "1\n", "stderr": "", "result": 42, "error": None},
    }


def test_tool_errors_are_in_the_payload_and_exit_zero(tmp_path: Path) -> None:
    done = caduceus("tool", "call", "calculator", '{"expression": 5}', scratch=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "invalid_arguments"


def test_bad_command_lines_exit_two(tmp_path: Path) -> None:
    assert caduceus("tool", "call", "python", "not json", scratch=tmp_path).returncode == 2
    assert caduceus("tool", "call", "x", "{}", "--tool", "nowhere:nothing", scratch=tmp_path).returncode == 2


def test_tool_list_prints_the_specs(tmp_path: Path) -> None:
    done = caduceus("tool", "list", "--http-allow", "example.org", scratch=tmp_path)
    assert done.returncode == 0, done.stderr
    names = [tool["function"]["name"] for tool in json.loads(done.stdout)]
    assert names == ["python", "calculator", "files", "current_time", "http_get"]


def test_doctor_names_the_isolation_in_force(tmp_path: Path) -> None:
    done = caduceus("doctor", scratch=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "isolation: bubblewrap"
    assert f"scratch root: {tmp_path}" in lines
    [limits] = [line for line in lines if line.startswith("call limits")]
    assert all(f"{controller} (v" in limits for controller in ("memory", "pids", "cpu")), limits
    assert "scratch quota: 256 MiB per conversation (loop-mounted ext4 image)" in done.stdout
    assert "signals: a PID namespace per call" in done.stdout and "WARNING" not in done.stdout


def test_doctor_says_loudly_what_is_missing(tmp_path: Path) -> None:
    done = caduceus("doctor", scratch=tmp_path, CADUCEUS_SCRATCH_QUOTA_MB="0")
    assert done.returncode == 0, done.stderr
    assert "scratch quota: NONE: quotas are switched off" in done.stdout
    assert "WARNING: calls are not bounded as a whole here; untrusted tools are REFUSED" in done.stdout


def test_tool_call_reaches_an_mcp_server(tmp_path: Path) -> None:
    server = Path(__file__).with_name("mcp_server_workers.py")
    mcp = f"{sys.executable} -I {server}"
    done = caduceus(
        "tool",
        "call",
        "add",
        '{"a": 1, "b": 2}',
        "--mcp",
        mcp,
        "--mcp-path",
        str(server.parent),
        scratch=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "add", "content": {"result": 3}}


def test_doctor_refuses_a_bad_quota_setting_with_a_clear_message(tmp_path: Path) -> None:
    done = caduceus("doctor", scratch=tmp_path, CADUCEUS_SCRATCH_QUOTA_MB="lots")
    assert done.returncode == 2
    assert "CADUCEUS_SCRATCH_QUOTA_MB must be a number of at least 0, not 'lots'" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
