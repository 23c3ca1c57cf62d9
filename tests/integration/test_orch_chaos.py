"""The crash test: worker processes SIGKILLed at random; every run completes, nothing is lost or doubled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def test_runs_survive_sigkilled_workers(redis_url: str) -> None:
    command = [sys.executable, str(CHAOS), "--redis", redis_url, "--runs", "10", "--steps", "4"]
    command += ["--workers", "3", "--kills", "5", "--seed", "7", "--timeout", "120"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("RESULT "), done.stdout[-2000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["kills"] >= 1
    assert result["resumed"] >= 1, "no run was taken over: the kills did not hit a run in progress"
    assert (result["runs"], result["completed"], result["lost"], result["duplicate_effects"]) == (
        10,
        10,
        0,
        0,
    )
