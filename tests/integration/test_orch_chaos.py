"""The fault campaign, short: every fault kind of ``bench/chaos.py`` injected while runs with sandboxed tool
calls are in flight; every run completes, nothing is lost, doubled, left dangling or stuck. Correctness
only: the campaign's timings are the benchmark's business (``make bench-chaos``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"
ZERO = (
    "lost",
    "duplicate_effects",
    "dangling_calls",
    "stuck",
    "late",
    "event_anomalies",
    "stream_mismatches",
)


def test_runs_survive_every_fault_kind() -> None:
    command = [sys.executable, str(CHAOS), "--runs", "4", "--steps", "2", "--workers", "3"]
    command += ["--injections", "3", "--gap", "0.2", "0.6", "--deadline", "60", "--seed", "7"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=220, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("RESULT "), done.stdout[-2000:]
    result = json.loads(line.removeprefix("RESULT "))
    rows = result["faults"]
    assert set(rows) == {"worker_kill", "tool_kill", "redis_restart", "redis_stall", "network", "api_kill"}
    for kind, row in rows.items():
        assert row["injected"] >= 1, f"{kind}: no fault was injected"
        assert row["completed"] == row["runs"] == 4, (kind, row)
        assert {name: row.get(name, 0) for name in ZERO} == dict.fromkeys(ZERO, 0), (kind, row)
    assert result["within_deadline"]
