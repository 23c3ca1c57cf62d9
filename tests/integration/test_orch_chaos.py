"""The fault campaign, short: every fault kind of ``bench/chaos.py`` injected while runs with sandboxed tool
calls are in flight; every run completes, nothing is lost, doubled, left dangling or stuck. Correctness
only: the campaign's timings are the benchmark's business (``make bench-chaos``)."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
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
    command = [sys.executable, str(CHAOS), "--runs", "4", "--steps", "2", "--workers", "2", "--seed", "7"]
    # Two faults of each kind, one stall (each lasts past the client's 5 s timeout). The deadline and the
    # timeouts leave room for a loaded machine, where a killed worker's successor takes tens of seconds to
    # start; the targets do not depend on them.
    command += ["--injections", "2", "--injections-of", "redis_stall=1", "--gap", "0.2", "0.6"]
    command += ["--deadline", "120"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=540, check=False)
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


def rig() -> Any:
    spec = importlib.util.spec_from_file_location("chaos_rig", CHAOS.parent / "chaos_rig.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_debug_dump_spares_a_worker_still_starting() -> None:
    """SIGUSR1 kills a process that has no handler for it yet: a worker still importing (seconds on a
    loaded machine) would die of the dump, and runs then waited for a worker that never came."""
    started = "import signal, sys, time; time.sleep(1); "
    handled = "signal.signal(signal.SIGUSR1, lambda *_: print('dumped', flush=True)); time.sleep(60)"
    fleet = rig().Fleet("w", 1, lambda _: [sys.executable, "-c", started + handled])
    try:
        [process] = fleet.processes.values()
        fleet.signal(signal.SIGUSR1)  # still starting
        time.sleep(1.5)
        assert process.poll() is None, "the signal killed a worker that was starting"
    finally:
        fleet.stop()
