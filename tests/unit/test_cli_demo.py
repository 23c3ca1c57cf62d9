"""The ``caduceus demo`` command, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.cli import main


def test_demo_streams_calls_validates_and_appends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--protocol", "--chunk", "3"]) == 0
    out = capsys.readouterr().out
    assert "CALL     call_0 get_current_temperature" in out
    assert "call_1: refused (invalid_arguments)" in out
    assert "'kelvin' is not one of ['celsius', 'fahrenheit']" in out
    assert "call_2: get_current_wind_speed -> 6.0" in out
    assert '<tool_response>\n{"name": "get_current_temperature", "content": 22.0}\n</tool_response>' in out
    assert "scripted model output" in out


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "caduceus"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_unknown_command_exits_non_zero() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2
