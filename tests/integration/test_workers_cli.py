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


def caduceus(*args: str, scratch: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CADUCEUS_SCRATCH_ROOT": str(scratch)}
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
    assert done.stdout.splitlines()[0] == "isolation: bubblewrap"
    assert f"scratch root: {tmp_path}" in done.stdout


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
